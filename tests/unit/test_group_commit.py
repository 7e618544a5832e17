"""Group commit: concurrent requests share one allocation, one insert and one publish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.store.sqlite import SqliteStore
from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.model import Message, new_message_ids
from herald.messaging.accept import Acceptor, Draft
from herald.services.collect.groupcommit import GroupCommit

APP = "app_00000000000000a1"
OTHER_APP = "app_00000000000000b2"


class CountingStore(SqliteStore):
    """The standalone store, counting the writes of the accept path; it can be made to fail."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.allocations: list[dict[str, int]] = []
        self.inserts: list[int] = []
        self.refuse_inserts = False
        self.gate: asyncio.Event | None = None  # while set to an unset event, allocations wait for it

    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        self.allocations.append(dict(counts))
        if self.gate is not None:
            await self.gate.wait()
        return await super().allocate_offsets(app_id, counts)

    async def insert_messages(self, messages: Sequence[Message]) -> None:
        if self.refuse_inserts:
            raise Unavailable("store down", code="store_unavailable")
        self.inserts.append(len(messages))
        await super().insert_messages(messages)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    impl = CountingStore(str(tmp_path / "herald.db"))
    await impl.start()
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
async def bus() -> MemoryBus:
    impl = MemoryBus()
    await impl.start()
    return impl


def draft(*channels: str) -> Draft:
    return Draft(channels, "e", {"n": 1}, 60)


def queued(bus: MemoryBus) -> list[dict]:
    return [wire for body in list(bus._dispatch._items) for wire in codec.decode_batch(body)]


async def test_concurrent_requests_are_stored_with_one_allocation_and_one_insert(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus))
    results = await asyncio.gather(*(commit.accept(APP, [draft(f"user:u{n}")]) for n in range(5)))
    assert [[m.channel for group in result for m in group] for result in results] == [[f"user:u{n}"] for n in range(5)]
    assert store.allocations == [{f"user:u{n}": 1 for n in range(5)}]
    assert store.inserts == [5]
    assert len(bus._dispatch._items) == 1, "one publish for the whole group"


async def test_a_shared_channel_is_allocated_once_and_numbered_in_arrival_order(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus))
    results = await asyncio.gather(
        commit.accept(APP, [draft("user:ann"), draft("user:ann")]),
        commit.accept(APP, [draft("user:ann", "user:bob")]),
    )
    assert store.allocations == [{"user:ann": 3, "user:bob": 1}]
    assert [[(m.channel, m.offset) for m in group] for group in results[0]] == [[("user:ann", 1)], [("user:ann", 2)]]
    assert [[(m.channel, m.offset) for m in group] for group in results[1]] == [[("user:ann", 3), ("user:bob", 1)]]


async def test_requests_of_different_apps_in_one_group_keep_their_own_counters(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus))
    mine, theirs = await asyncio.gather(
        commit.accept(APP, [draft("user:ann")]), commit.accept(OTHER_APP, [draft("user:ann")])
    )
    assert (mine[0][0].app_id, mine[0][0].offset) == (APP, 1)
    assert (theirs[0][0].app_id, theirs[0][0].offset) == (OTHER_APP, 1)
    assert store.inserts == [2]


async def test_a_store_failure_fails_every_request_of_the_group_and_queues_nothing(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus))
    store.refuse_inserts = True
    outcomes = await asyncio.gather(
        *(commit.accept(APP, [draft(f"user:u{n}")]) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    assert queued(bus) == []


async def test_a_request_given_up_before_its_group_is_written_is_left_out(store: CountingStore, bus: MemoryBus) -> None:
    commit = GroupCommit(Acceptor(store, bus), max_in_flight=1)
    store.gate = asyncio.Event()
    first = asyncio.ensure_future(commit.accept(APP, [draft("user:first")]))
    while not store.allocations:  # the first group holds the only slot, waiting at the store
        await asyncio.sleep(0)
    abandoned = asyncio.ensure_future(commit.accept(APP, [draft("user:gone")]))
    kept = asyncio.ensure_future(commit.accept(APP, [draft("user:kept")]))
    await asyncio.sleep(0)
    abandoned.cancel()
    store.gate.set()
    await first
    [[message]] = await kept
    assert message.channel == "user:kept"
    assert [wire["channel"] for wire in queued(bus)] == ["user:first", "user:kept"]
    assert await store.channel_heads(APP, ["user:gone"]) == {"user:gone": 0}


async def test_a_request_arriving_while_nothing_is_written_does_not_wait_for_the_window(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus), window_s=3600)
    [[message]] = await asyncio.wait_for(commit.accept(APP, [draft("user:ann")]), 30)  # a bound, not a speed check
    assert message.offset == 1


async def test_requests_arriving_while_a_group_is_written_gather_into_the_next_one(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus), window_s=0.5)
    store.gate = asyncio.Event()
    first = asyncio.ensure_future(commit.accept(APP, [draft("user:first")]))
    while not store.allocations:
        await asyncio.sleep(0)
    later = []
    for n in range(3):  # one per event-loop turn
        later.append(asyncio.ensure_future(commit.accept(APP, [draft(f"user:u{n}")])))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(first, *later)
    assert store.inserts == [1, 3]


async def test_a_group_holds_at_most_max_messages(store: CountingStore, bus: MemoryBus) -> None:
    commit = GroupCommit(Acceptor(store, bus), max_messages=4)
    await asyncio.gather(*(commit.accept(APP, [draft(f"user:u{n}", f"user:v{n}")]) for n in range(4)))
    assert store.inserts == [4, 4]


async def test_a_request_larger_than_max_messages_is_a_group_of_its_own(store: CountingStore, bus: MemoryBus) -> None:
    commit = GroupCommit(Acceptor(store, bus), max_messages=2)
    [group] = await commit.accept(APP, [draft("user:a", "user:b", "user:c")])
    assert [m.offset for m in group] == [1, 1, 1]
    assert store.inserts == [3]


def test_message_ids_drawn_together_are_distinct_32_hex_digits() -> None:
    ids = new_message_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_a_group_cancelled_while_gathering_leaves_no_request_waiting(
    store: CountingStore, bus: MemoryBus
) -> None:
    commit = GroupCommit(Acceptor(store, bus), window_s=3600)
    waiting = asyncio.ensure_future(commit.accept(APP, [draft("user:ann")]))
    await asyncio.sleep(0)
    for task in commit._batcher.tasks:  # what the loop does to leftover tasks at shutdown
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    [[message]] = await GroupCommit(Acceptor(store, bus), window_s=0).accept(APP, [draft("user:ann")])
    assert message.offset == 1, "nothing of the cancelled group was stored"
