"""A push node on in-process adapters for unit tests: a store that counts its calls, and
sockets that keep what was written."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from herald.adapters.store.sqlite import SqliteStore
from herald.services.push.node import PushNode
from herald.services.push.readers import Reader

APP = "app-1"


@asynccontextmanager
async def counting_sqlite() -> AsyncIterator[CountingStore]:
    """An in-memory SQLite store that counts its calls, closed after use."""
    sqlite = SqliteStore(":memory:")
    await sqlite.start()
    try:
        yield CountingStore(sqlite)
    finally:
        await sqlite.close()


class CountingStore:
    """The SQLite store, counting each method called."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


class Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def socket() -> Any:
    """What the node uses of a ``services.push.socket.Socket``: open, and taking frames."""
    transport = Transport()

    def write_framed(data: bytes) -> bool:
        transport.write(data)
        return True

    return SimpleNamespace(open=True, transport=transport, write_framed=write_framed)


async def connect(node: PushNode, user_id: str) -> Reader:
    reader = Reader(socket(), uuid.uuid4().hex, APP, user_id, None)
    await node.attach(reader, time.time())
    positions, heads = await node.load(reader)
    node.begin(reader, positions, heads)
    return reader


async def settle(node: PushNode) -> None:
    """Until the node has carried out every decision and finished every task."""
    await asyncio.sleep(0)  # the decisions of this loop turn are carried out
    while node._tasks:
        await asyncio.gather(*node._tasks)
        await asyncio.sleep(0)  # the tasks' done callbacks run, and what they decided
