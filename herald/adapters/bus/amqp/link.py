"""One AMQP connection that comes back, to whichever node of a RabbitMQ cluster answers.

``HERALD_AMQP_URL`` may list several URLs (the nodes of a cluster, comma-separated). The
link connects to the first that answers, in the order given; when the connection drops it
tries the others in turn, starting with the one after the node it lost (which is likely
the node that went away), with a bounded backoff between rounds, until one answers or the
link is closed. Quorum queues live on every member node, so a client on a surviving node
keeps its queues.

The link only owns the connection; channels are the users' business. Each user (the
publisher, every subscription) notices a lost connection through its own channel closing,
asks ``current()`` for the new connection and re-declares what it needs, the way
aio-pika's robust classes layer recovery over the plain ones. aio-pika's own robust
connection is not used: it reconnects to one URL only, and restores consumers behind the
back of code that needs to know (``Bus.consuming``, ``on_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPConnectionError

from herald.adapters.bus.amqp.corked import CorkedConnection
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.amqp_link")

# Faults of connecting that another node or a later attempt may not have.
CONNECT_FAULTS: tuple[type[BaseException], ...] = (AMQPConnectionError, ConnectionError, OSError, TimeoutError)
# Closing may also meet a connection aio-pika already tore down (RuntimeError).
CLOSE_FAULTS: tuple[type[BaseException], ...] = (*CONNECT_FAULTS, RuntimeError)

# One attempt at one node; a refused connection (a stopped node) fails at once anyway.
ATTEMPT_TIMEOUT_S = 5.0
# Between rounds over every URL: doubling from the first to the last.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
CLOSE_TIMEOUT_S = 5.0


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """``HERALD_AMQP_URL``'s entries, in order."""
    listed = urls.split(",") if isinstance(urls, str) else list(urls)
    found = [url.strip() for url in listed if url.strip()]
    if not found:
        raise ValueError("no AMQP URL")
    return found


def where(url: str) -> str:
    """host:port of a URL, without its credentials: safe to log."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


class AmqpLink:
    def __init__(self, urls: str | Sequence[str], name: str = "herald") -> None:
        self._urls = split_urls(urls)
        self._name = name
        self._connection: AbstractConnection | None = None
        self._index = 0  # the URL of the current (or last) connection
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        self.generation = 0  # one more per connection made: users compare it to know theirs is stale

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    @property
    def node(self) -> str:
        """host:port of the node in use (or last used)."""
        return where(self._urls[self._index])

    async def start(self, timeout_s: float) -> None:
        """Connect to the first node that answers within ``timeout_s``, else ``Unavailable``."""
        self._closed = False
        try:
            async with asyncio.timeout(timeout_s):
                await self._connect_round(first=0, until_connected=True)
        except TimeoutError as exc:
            raise Unavailable(f"RabbitMQ unavailable: no node of {self._nodes()} answered in {timeout_s}s") from exc
        self._watcher = asyncio.create_task(self._watch(), name="herald-amqp-link")

    def current(self) -> AbstractConnection:
        """The open connection, or ``Unavailable`` while reconnecting (callers retry later)."""
        connection = self._connection
        # aio-pika's ``is_closed`` only turns true once close() was called; a dropped
        # connection shows as its ``connected`` event cleared.
        if connection is None or connection.is_closed or not connection.connected.is_set():
            if self._closed:
                raise Unavailable("the bus is closed")
            raise Unavailable("RabbitMQ unavailable: reconnecting")
        return connection

    async def wait_connected(self) -> AbstractConnection:
        """The connection once there is one (the caller bounds the wait)."""
        while True:
            with contextlib.suppress(Unavailable):
                return self.current()
            if self._closed:
                raise Unavailable("the bus is closed")
            self._connected.clear()
            await self._connected.wait()

    async def close(self) -> None:
        self._closed = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        connection, self._connection = self._connection, None
        self._connected.set()  # wakes waiters, who then see the link closed
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)
            except CLOSE_FAULTS as exc:
                log.info("RabbitMQ connection did not close cleanly (%r)", exc)

    async def _watch(self) -> None:
        """Wait for the connection to drop, then connect again (to the next node first)."""
        while not self._closed:
            await self._lost.wait()
            if self._closed:
                return
            log.warning("%s: lost RabbitMQ at %s; reconnecting", self._name, self.node)
            await self._connect_round(first=(self._index + 1) % len(self._urls), until_connected=True)

    async def _connect_round(self, first: int, until_connected: bool) -> None:
        delay = BACKOFF_FIRST_S
        while not self._closed:
            for step in range(len(self._urls)):
                index = (first + step) % len(self._urls)
                if await self._try(index):
                    return
            if not until_connected:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _try(self, index: int) -> bool:
        url = self._urls[index]
        try:
            connection = await aio_pika.connect(url, timeout=ATTEMPT_TIMEOUT_S, connection_class=CorkedConnection)
        except CONNECT_FAULTS as exc:
            log.info("%s: RabbitMQ at %s did not answer (%r)", self._name, where(url), exc)
            return False
        self._lost.clear()
        connection.close_callbacks.add(self._on_close)
        self._connection, self._index = connection, index
        self.generation += 1
        self._connected.set()
        if self.generation > 1:
            log.warning("%s: connected to RabbitMQ at %s", self._name, where(url))
        return True

    def _on_close(self, sender: object, *_: object) -> None:
        if not self._closed and sender is self._connection:
            self._connection = None
            self._lost.set()

    def _nodes(self) -> str:
        return ", ".join(where(url) for url in self._urls)
