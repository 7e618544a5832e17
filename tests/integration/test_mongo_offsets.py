"""MongoDB only: offsets for many channels by compare-and-set, raced by other processes.

Another collect or push process may raise a counter between this store's read and its
conditional write; these tests put such a rival (a second client) exactly there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from herald.adapters.store.mongo import MongoStore

APP = "app_00000000000000a1"


class RacedStore(MongoStore):
    """A store whose counter reads are each followed by a rival's allocation of ``race``."""

    def __init__(self, url: str, database: str, rival: MongoStore) -> None:
        super().__init__(url, database=database)
        self.rival = rival
        self.race: dict[str, int] = {}
        self.races_left = 0
        self.reads = 0

    async def channel_heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        self.reads += 1
        heads = await super().channel_heads(app_id, channels)
        if self.races_left > 0:
            self.races_left -= 1
            await self.rival.allocate_offsets(app_id, self.race)
        return heads


@pytest.fixture
async def rival(mongo_url: str, namespace: str) -> AsyncIterator[MongoStore]:
    store = MongoStore(mongo_url, database=namespace)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def raced(mongo_url: str, namespace: str, rival: MongoStore) -> AsyncIterator[RacedStore]:
    store = RacedStore(mongo_url, namespace, rival)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_a_counter_raised_by_a_rival_after_the_read_is_raised_again_from_its_new_value(
    raced: RacedStore,
) -> None:
    raced.race, raced.races_left = {"user:ann": 2}, 1
    allocated = await raced.allocate_offsets(APP, {"user:ann": 1, "user:bob": 1, "user:cid": 1})
    assert allocated == {"user:ann": 3, "user:bob": 1, "user:cid": 1}
    assert await raced.channel_heads(APP, ["user:ann"]) == {"user:ann": 3}


async def test_a_counter_created_by_a_rival_after_the_read_is_not_created_twice(raced: RacedStore) -> None:
    raced.race, raced.races_left = {"user:new": 4}, 1
    allocated = await raced.allocate_offsets(APP, {"user:new": 1, "user:bob": 1, "user:cid": 1})
    assert allocated["user:new"] == 5


async def test_an_allocation_raced_on_every_round_still_completes(raced: RacedStore) -> None:
    raced.race, raced.races_left = {"user:ann": 2}, 100
    allocated = await raced.allocate_offsets(APP, {"user:ann": 1, "user:bob": 1, "user:cid": 1})
    heads = await raced.rival.channel_heads(APP, ["user:ann"])
    assert allocated["user:ann"] == heads["user:ann"], "the last allocation of the channel was ours"
    assert allocated["user:ann"] % 2 == 1, "the rival took pairs, we took one: nothing skipped or shared"


async def test_allocators_in_two_processes_never_share_or_skip_an_offset(raced: RacedStore, rival: MongoStore) -> None:
    channels = [f"user:u{i}" for i in range(8)]
    requests = [(store, {channel: k for channel in channels[k % 3 :]}) for k in range(1, 9) for store in (raced, rival)]
    results = await asyncio.gather(*(store.allocate_offsets(APP, counts) for store, counts in requests))
    for channel in channels:
        owned = sorted(
            offset
            for (_, counts), result in zip(requests, results, strict=True)
            if channel in counts
            for offset in range(result[channel] - counts[channel] + 1, result[channel] + 1)
        )
        assert owned == list(range(1, len(owned) + 1)), channel


async def test_a_head_guessed_from_this_process_s_last_write_and_raised_by_a_rival_since_is_read_again(
    raced: RacedStore, rival: MongoStore
) -> None:
    channels = {"user:ann": 1, "user:bob": 1, "user:cid": 1}
    await raced.allocate_offsets(APP, channels)  # ann, bob and cid at 1: guessed from now on
    await rival.allocate_offsets(APP, {"user:ann": 2})  # ann at 3, behind the guess's back
    raced.reads = 0

    allocated = await raced.allocate_offsets(APP, channels)

    assert allocated == {"user:ann": 4, "user:bob": 2, "user:cid": 2}
    assert raced.reads == 1, "the guessed round read nothing; the round for ann read its head"
    assert await rival.channel_heads(APP, list(channels)) == allocated
