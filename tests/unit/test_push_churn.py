"""A push node under connect and disconnect churn holds what a fresh node holds: every
per-connection, per-user, per-channel and per-message structure has its removal path."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator

import pytest
from herald.services.push.node import PushNode
from herald.services.push.readers import Reader

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.model import Message
from tests.support.pushnode import APP, CountingStore, connect, settle

CYCLES = 150


@pytest.fixture
async def node() -> AsyncIterator[PushNode]:
    sqlite = SqliteStore(":memory:")
    await sqlite.start()
    bus = MemoryBus()
    await bus.start()
    node = PushNode("node-a", bus, MemoryDirectory(), CountingStore(sqlite), 10.0)  # type: ignore[arg-type]
    await bus.consume_node("node-a", node.handle)
    yield node
    await bus.close()
    await sqlite.close()


def sizes(node: PushNode) -> dict[str, int]:
    return {**node.core.sizes(), **node._reads.sizes(), "tasks": len(node._tasks)}


async def send(node: PushNode, channel: str, offset: int) -> None:
    now = time.time()
    message = Message(f"{channel}#{offset}", APP, channel, offset, "e", {}, int(now * 1000), now + 60)
    await node._store.store.insert_messages([message])  # type: ignore[attr-defined]
    await node.handle(b'{"messages":[' + _wire(message) + b"]}")


def _wire(message: Message) -> bytes:
    from herald.core import codec

    return codec.dumps(message.to_wire())


async def test_a_node_after_connect_and_disconnect_churn_holds_what_a_fresh_one_does(node: PushNode) -> None:
    await node._store.store.allocate_offsets(APP, {"group:ops": CYCLES})  # type: ignore[attr-defined]
    fresh = sizes(node)
    for cycle in range(CYCLES):
        user = f"u{cycle % 10}"
        await node._store.store.add_member(APP, "ops", user, 0, time.time())  # type: ignore[attr-defined]
        reader = await connect(node, user)
        await send(node, "group:ops", cycle + 1)
        node.core.ack(reader, "group:ops", cycle + 1)
        node.core.kick(APP, user, "some-other-token", "kicked", time.time())
        await settle(node)
        await node.detach(reader)
        del reader
    await settle(node)
    node.core.tick(time.time() + 120)  # kicks are remembered a minute, then forgotten
    await node.flush_receipts()
    gc.collect()
    assert sizes(node) == fresh
    alive = sum(isinstance(value, Reader) for value in gc.get_objects())
    assert alive == 0, f"{alive} readers are still referenced after their disconnect"
