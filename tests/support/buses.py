"""What the bus contract tests share: buses opened the way processes would, recording
handlers, and a TCP proxy that can cut a connection to RabbitMQ.

A ``Broker`` opens buses the way separate processes would: on RabbitMQ each ``open()`` is
a new connection; in memory one process has one bus, so every ``open()`` returns it.
Kinds: ``memory``, ``amqp`` (quorum work queues, the default) and ``amqp-classic``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aio_pika

from herald.adapters.bus.amqp import AmqpBus
from herald.adapters.bus.base import BatchHandler, Bus
from herald.adapters.bus.memory import MemoryBus
from herald.core.names import Names

WAIT_S = 15.0
# Long enough for a stray delivery to show up; used only to check that none does.
QUIET_S = 0.5
# Every events group the bus tests use: their durable queues are deleted after each test.
GROUPS = ("webhooks", "audit", "presence", "everything")


class Broker:
    def __init__(self, kind: str, namespace: str, amqp_url: str, delivery_limit: int = 20) -> None:
        self.kind = kind
        self.names = Names(namespace)
        self.amqp_url = amqp_url
        self.delivery_limit = delivery_limit
        self._buses: list[Bus] = []

    @property
    def queue_type(self) -> str:
        return "classic" if self.kind == "amqp-classic" else "quorum"

    async def open(self) -> Bus:
        if self.kind == "memory" and self._buses:
            return self._buses[0]
        bus: Bus
        if self.kind == "memory":
            bus = MemoryBus(delivery_limit=self.delivery_limit)
        else:
            # Short expiry: a queue a failed test leaves behind disappears by itself.
            bus = AmqpBus(
                self.amqp_url,
                self.names,
                prefetch=16,
                node_queue_expires_s=10.0,
                queue_type=self.queue_type,
                delivery_limit=self.delivery_limit,
            )
        await bus.start()
        self._buses.append(bus)
        return bus

    async def lose_subscriptions(self, bus: Bus) -> None:
        """Break every subscription of ``bus`` from the broker's side, without telling it: on
        RabbitMQ each subscription's channel is closed by the broker (a publish to an
        exchange that does not exist is a channel error); in memory, the test hook."""
        if isinstance(bus, AmqpBus):
            for subscription in bus._subscriptions:
                channel = subscription._channel
                assert channel is not None
                underlay = await channel.get_underlay_channel()
                with contextlib.suppress(Exception):
                    await underlay.basic_publish(b"", exchange=f"{self.names.namespace}.no-such-exchange")
        else:
            assert isinstance(bus, MemoryBus)
            bus.lose_subscriptions()

    async def delete_queue(self, name: str) -> None:
        """Delete a queue from another connection: the broker cancels its consumers."""
        if self.kind == "memory":
            raise AssertionError("in memory, use lose_subscriptions")
        connection = await aio_pika.connect(self.amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)

    async def close_all(self) -> None:
        for bus in reversed(self._buses):
            await asyncio.wait_for(bus.close(), WAIT_S)
        if self.kind != "memory":
            await drop_bus_topology(self.names, self.amqp_url)


async def drop_bus_topology(names: Names, amqp_url: str) -> None:
    """Delete the events queues of the groups bus tests use (tests/support/cleanup.py
    deletes the rest with the namespace)."""
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for group in GROUPS:
                await asyncio.wait_for(channel.queue_delete(names.events_queue(group)), 5)
            await asyncio.wait_for(channel.exchange_delete(names.events_exchange), 5)


class Inbox:
    """A handler that records what it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.delay_s = delay_s

    async def __call__(self, body: bytes) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.bodies.append(body)


class Changes:
    """An ``on_change`` callback that records what it was told."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def __call__(self, subscribed: bool) -> None:
        self.seen.append(subscribed)


def numbered(count: int) -> list[bytes]:
    return [f"m{index:04d}".encode() for index in range(count)]


def batches(handler: Callable[[bytes], Awaitable[None]]) -> BatchHandler:
    """A dispatch handler that hands each body of a batch to ``handler`` and leaves nothing
    to settle: the batch is acknowledged as soon as the call returns."""

    async def handle(bodies: list[bytes]) -> Awaitable[None]:
        for body in bodies:
            await handler(body)
        return nothing_left()

    return handle


async def nothing_left() -> None:
    return None


class Batches:
    """A dispatch handler recording each call's bodies; each call's remaining work waits
    for ``release`` (set from the start unless ``held``) and raises ``failures`` first."""

    def __init__(self, held: bool = False, failures: int = 0) -> None:
        self.calls: list[list[bytes]] = []
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.failures = failures

    @property
    def bodies(self) -> list[bytes]:
        return [body for call in self.calls for body in call]

    async def __call__(self, bodies: list[bytes]) -> Awaitable[None]:
        self.calls.append(bodies)
        return self._settle()

    async def _settle(self) -> None:
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a node publish was not confirmed")


class TcpProxy:
    """Forwards a loopback port to RabbitMQ, and can cut every connection at once."""

    def __init__(self, port: int, upstream: int) -> None:
        self.port = port
        self.upstream = upstream
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.update({client_writer, upstream_writer})
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer),
            self._pipe(upstream_reader, client_writer),
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
