"""What a push node reads from the store when a connection arrives.

A node with in-process adapters (SQLite in memory, the memory directory and bus); the
store is wrapped to count its calls, the socket is a stand-in that keeps what was written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.core.errors import Unavailable
from herald.core.model import Message
from herald.services.push.node import PushNode
from tests.support.pushnode import APP, CountingStore, connect, counting_sqlite, settle


class NoPresence(MemoryDirectory):
    async def add_connections(self, node_id: str, conns: Any, ttl_s: float) -> list[Presence]:
        raise Unavailable("directory down")


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    async with counting_sqlite() as counting:
        yield counting


async def insert(store: CountingStore, channel: str) -> None:
    [offset] = (await store.store.allocate_offsets(APP, {channel: 1})).values()
    now = time.time()
    message = Message(uuid.uuid4().hex, APP, channel, offset, "e", {}, int(now * 1000), now + 60)
    await store.store.insert_messages([message])


def reads(store: CountingStore) -> Counter[str]:
    return +Counter({name: count for name, count in store.calls.items() if name != "allocate_offsets"})


async def test_a_new_connection_with_nothing_pending_makes_three_store_reads(store: CountingStore) -> None:
    node = PushNode("node-a", MemoryBus(), MemoryDirectory(), store, 10.0)  # type: ignore[arg-type]

    await connect(node, "ann")
    await settle(node)

    assert reads(store) == Counter({"cursors_of": 1, "memberships": 1, "channel_heads": 1})


async def test_a_group_member_reads_its_groups_heads_once_their_routes_are_written(store: CountingStore) -> None:
    directory = MemoryDirectory()
    node = PushNode("node-a", MemoryBus(), directory, store, 10.0)  # type: ignore[arg-type]
    await store.store.add_member(APP, "ops", "ann", 0, time.time())
    routed_at_heads: list[tuple[set[str], set[str]]] = []
    real_heads = store.store.channel_heads

    async def heads_after_routes(app_id: str, channels: list[str]) -> dict[str, int]:
        user = await directory.nodes_for([(APP, "ann")])
        group = await directory.nodes_for_channels([(APP, "group:ops")])
        routed_at_heads.append((user.get((APP, "ann"), set()), group.get((APP, "group:ops"), set())))
        return await real_heads(app_id, channels)

    store.store.channel_heads = heads_after_routes  # type: ignore[method-assign]
    await connect(node, "ann")
    await settle(node)

    assert reads(store) == Counter({"cursors_of": 1, "memberships": 1, "channel_heads": 2})
    # The inbox's and the broadcast's heads once the user is routed here, then the group's
    # once the group is: a message allocated after a head read arrives live.
    assert routed_at_heads == [({"node-a"}, set()), ({"node-a"}, {"node-a"})]


async def test_connections_starting_together_share_each_store_read(store: CountingStore) -> None:
    node = PushNode("node-a", MemoryBus(), MemoryDirectory(), store, 10.0)  # type: ignore[arg-type]
    for user in ("ann", "bob"):
        await store.store.add_member(APP, "ops", user, 0, time.time())
    await store.store.save_cursors(APP, "bob", {"user:bob": 0})
    users = ["ann", "bob", *(f"u{n}" for n in range(30))]

    readers = await asyncio.gather(*(connect(node, user) for user in users))
    await settle(node)

    # The inboxes' and broadcast's heads, then the two members' group's.
    assert reads(store) == Counter({"cursors_of": 1, "memberships": 1, "channel_heads": 2})
    assert [sorted(reader.groups) for reader in readers[:3]] == [["group:ops"], ["group:ops"], []]


async def test_a_connection_reads_the_backlog_of_only_the_channels_with_one(store: CountingStore) -> None:
    node = PushNode("node-a", MemoryBus(), MemoryDirectory(), store, 10.0)  # type: ignore[arg-type]
    await insert(store, "user:ann")

    conn = await connect(node, "ann")
    await settle(node)

    assert store.calls["read_channel"] == 1
    assert conn.sequences["user:ann"].sent == 1


async def test_a_connection_whose_route_was_not_written_reads_every_backlog(store: CountingStore) -> None:
    node = PushNode("node-a", MemoryBus(), NoPresence(), store, 10.0)  # type: ignore[arg-type]

    await connect(node, "ann")
    await settle(node)

    assert store.calls["read_channel"] == 2  # the inbox and the broadcast
