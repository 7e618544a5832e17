"""The reads of a connection's start, shared by the connections starting together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.core.errors import Unavailable
from herald.services.push.connect_reads import ConnectReads
from tests.support.pushnode import CountingStore, counting_sqlite


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    async with counting_sqlite() as counting:
        yield counting


def reads(store: CountingStore, directory: MemoryDirectory) -> ConnectReads:
    return ConnectReads(store, directory)  # type: ignore[arg-type]


async def test_users_starting_together_share_one_query_of_each_kind(store: CountingStore) -> None:
    await store.store.save_cursors("app-1", "ann", {"user:ann": 4})
    await store.store.add_member("app-1", "ops", "bob", 2, time.time())
    shared = reads(store, MemoryDirectory())

    starts = await asyncio.gather(*(shared.start("app-1", user, f"user:{user}") for user in ("ann", "bob", "cy")))

    assert [(cursors, groups) for cursors, groups, _ in starts] == [({"user:ann": 4}, {}), ({}, {"ops": 2}), ({}, {})]
    assert store.calls == {"cursors_of": 1, "memberships": 1, "channel_heads": 1}


async def test_a_start_reads_the_inbox_and_broadcast_heads_beside_the_state(store: CountingStore) -> None:
    await store.store.allocate_offsets("app-1", {"user:ann": 3, "broadcast": 7})
    shared = reads(store, MemoryDirectory())

    _, _, heads = await shared.start("app-1", "ann", "user:ann")

    assert heads == {"user:ann": 3, "broadcast": 7}


async def test_each_app_gets_its_own_query(store: CountingStore) -> None:
    await store.store.save_cursors("app-2", "ann", {"user:ann": 9})
    shared = reads(store, MemoryDirectory())

    one, two = await asyncio.gather(shared.start("app-1", "ann", "user:ann"), shared.start("app-2", "ann", "user:ann"))

    assert (one[0], two[0]) == ({}, {"user:ann": 9})
    assert store.calls == {"cursors_of": 2, "memberships": 2, "channel_heads": 2}


async def test_each_caller_gets_only_its_own_channels_heads(store: CountingStore) -> None:
    await store.store.allocate_offsets("app-1", {"user:ann": 3, "broadcast": 7})
    shared = reads(store, MemoryDirectory())

    ann, bob = await asyncio.gather(
        shared.heads("app-1", ["user:ann", "broadcast"]), shared.heads("app-1", ["user:bob", "broadcast"])
    )

    assert (ann, bob) == ({"user:ann": 3, "broadcast": 7}, {"user:bob": 0, "broadcast": 7})
    assert store.calls == {"channel_heads": 1}


async def test_connections_held_are_counted_together_per_user() -> None:
    directory = MemoryDirectory()
    now = time.time()
    await directory.refresh_node("node-a", [], 30)
    await directory.add_connections("node-a", [Presence("app-1", "ann", f"c{n}", None, now) for n in range(2)], 30)
    shared = ConnectReads(None, directory)  # type: ignore[arg-type]

    assert await asyncio.gather(shared.held("app-1", "ann"), shared.held("app-1", "bob")) == [2, 0]


async def test_a_store_failure_reaches_every_connection_waiting_on_the_batch() -> None:
    class Down:
        async def cursors_of(self, *args: Any) -> Any:
            raise Unavailable("store down")

        async def memberships(self, *args: Any) -> Any:
            return {}

        async def channel_heads(self, app_id: str, channels: list[str]) -> Any:
            return dict.fromkeys(channels, 0)

    shared = ConnectReads(Down(), MemoryDirectory())  # type: ignore[arg-type]

    results = await asyncio.gather(*(shared.start("app-1", u, f"user:{u}") for u in "abc"), return_exceptions=True)

    assert [type(result) for result in results] == [Unavailable] * 3


async def test_a_stopped_node_answers_unavailable(store: CountingStore) -> None:
    shared = reads(store, MemoryDirectory())
    await shared.close()

    with pytest.raises(Unavailable, match="stopping"):
        await shared.held("app-1", "ann")
