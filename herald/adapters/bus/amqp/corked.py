"""The AMQP connection's writes of one event-loop turn, sent in one system call.

aiormq's writer task writes every frame it takes from its queue on its own
(``StreamWriter.write``), and on uvloop every write with an empty buffer is a ``send``
at once. One acknowledgement, one publish, one confirm select: each a system call, and
on loopback the kernel charges the receiver's wake-up to the sender too. A batch of
dispatch bodies acknowledged, a turn's ``user.online`` events published, a node's
publishes: N system calls for what fits in one segment. Profiles put these writes at
11-19% of the push node's and dispatch's CPU.

``CorkedWriter`` keeps what is written during a turn (``herald.core.corking``) and sends
it with one ``writelines``, so frames leave in the order they were written and no later
than the next pass of the event loop; a ``close`` sends what is kept first. aiormq takes
the factory as ``transport_factory``; aio-pika's connection filters its keyword
arguments, hence ``CorkedConnection``.

Publishes must not wait for their own write either: ``herald.adapters.bus.amqp.publishing``
queues a turn's publishes without waiting, so they leave together.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPConnectionError
from aiormq.connection import DEFAULT_PORTS, TransportFactory
from yarl import URL

from herald.core.corking import TurnWrites

# asyncio's default for StreamReader: the largest line or chunk buffered before pausing.
READ_LIMIT = 2**16


class CorkedWriter(asyncio.StreamWriter):
    """A ``StreamWriter`` whose writes of one loop turn leave together. ``drain`` is
    ``StreamWriter``'s own and sends nothing: aiormq drains after every frame that waits
    for its write (acks, publishes), which would send each on its own; what is kept
    leaves in this pass of the loop anyway."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._turn = TurnWrites(loop, self._send)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._turn.write(bytes(data))

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def uncork(self) -> None:
        """Send what this turn wrote (a no-op when it went out already)."""
        self._turn.flush()

    def _send(self, kept: list[bytes]) -> None:
        if self.transport.is_closing():
            return
        if len(kept) == 1:
            self.transport.write(kept[0])
        else:
            self.transport.writelines(kept)

    def write_eof(self) -> None:
        self.uncork()
        super().write_eof()

    def close(self) -> None:
        self.uncork()
        super().close()


class CorkedTransportFactory(TransportFactory):
    """aiormq's TCP and TLS factories, with a ``CorkedWriter``."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider is not None else None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        host, port = url.host or "", url.port or DEFAULT_PORTS[url.scheme]
        try:
            transport, _ = await loop.create_connection(lambda: protocol, host, port, ssl=ssl, **kwargs)
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        return reader, CorkedWriter(transport, protocol, reader, loop)


class CorkedConnection(aio_pika.Connection):
    """aio-pika's plain connection over ``CorkedTransportFactory``."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        super().__init__(url, loop, **kwargs)
        self.kwargs["transport_factory"] = CorkedTransportFactory()
