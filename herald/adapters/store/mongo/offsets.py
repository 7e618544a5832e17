"""Per-channel offset counters in MongoDB.

A few channels: one atomic ``$inc`` each. Many: a compare-and-set per counter, all in one
bulk write (``_compare_and_add``), against the values this process last wrote where it
knows them all (``head_guesses.py``: no read first). Allocations of this process that
share counters wait for each other (``_allocating``); other processes can only cost a round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from herald.adapters.store.base import OffsetStore
from herald.adapters.store.mongo.connection import MongoConnection, duplicates_only, translated
from herald.adapters.store.mongo.retry import with_retries
from herald.core.errors import Unavailable

# Channels from which one allocation reads and raises counters in bulk rather than
# with a find_one_and_update each: two round trips against one per channel.
_BULK_ALLOCATION_MIN = 3
# Compare-and-set rounds before the counters still contended are raised with $inc.
_COMPARE_AND_ADD_ROUNDS = 3


class MongoOffsets(MongoConnection, OffsetStore):
    # Offsets ----------------------------------------------------------------
    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        # A few channels: one atomic $inc each, in flight together. Many (a batch to a
        # thousand users, a group commit of many requests): read the counters and raise
        # each by compare-and-set, all in one bulk write (see _compare_and_add). The two
        # interleave safely, with each other and across processes: every write is a
        # single-document atomic update of the counter itself.
        if not counts:
            return {}
        async with self._allocating([_counter_id(app_id, channel) for channel in counts]):
            with translated():
                # Retried whole after a step-down: a counter an attempt already raised is
                # raised again, leaving a gap of offsets nobody holds (readers skip gaps).
                allocated = await with_retries(
                    "allocating offsets", lambda: self._allocate(app_id, counts), self._timeout_s
                )
        return {channel: allocated[channel] for channel in counts}

    async def _allocate(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        if len(counts) < _BULK_ALLOCATION_MIN:
            return await self._increment_each(app_id, counts)
        allocated: dict[str, int] = {}
        pending = dict(counts)
        for round_number in range(_COMPARE_AND_ADD_ROUNDS):
            # Only the first round may guess: a counter lost to a rival is read again.
            allocated.update(await self._compare_and_add(app_id, pending, may_guess=round_number == 0))
            pending = {channel: n for channel, n in pending.items() if channel not in allocated}
            if not pending:
                break
        else:
            # Contended on every round (other processes writing the same counters):
            # $inc always succeeds, so the rest cannot starve.
            allocated.update(await self._increment_each(app_id, pending))
        return allocated

    @asynccontextmanager
    async def _allocating(self, counter_ids: Sequence[str]) -> AsyncIterator[None]:
        """Wait until no allocation of this process touches these counters, then hold them.

        Concurrent allocations here (group commits, push nodes' publishers) would otherwise
        race each other's compare-and-set on shared counters and redo whole rounds; other
        processes still can, and lose only a round.
        """
        while True:
            busy = {self._busy_counters[i] for i in counter_ids if i in self._busy_counters}
            if not busy:
                break
            await asyncio.wait(busy)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for counter_id in counter_ids:
            self._busy_counters[counter_id] = done
        try:
            yield
        finally:
            for counter_id in counter_ids:
                if self._busy_counters.get(counter_id) is done:
                    del self._busy_counters[counter_id]
            done.set_result(None)

    async def _increment_each(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        channels = list(counts)
        values = await asyncio.gather(*(self._increment(app_id, channel, counts[channel]) for channel in channels))
        return dict(zip(channels, values, strict=True))

    async def _increment(self, app_id: str, channel: str, count: int) -> int:
        counter_id = _counter_id(app_id, channel)
        args: dict[str, Any] = {
            "filter": {"_id": counter_id},
            "update": {"$inc": {"n": count}},
            "upsert": True,
            "return_document": ReturnDocument.AFTER,
        }
        try:
            doc = await self._counters.find_one_and_update(**args)
        except DuplicateKeyError:
            # Two first allocations of a channel raced to create its counter; servers
            # before 4.2 do not retry that upsert themselves. The counter exists now.
            doc = await self._counters.find_one_and_update(**args)
        if doc is None:  # an upsert returning the new document always finds one
            raise Unavailable(f"the offset counter of {channel} was not written")
        value = int(doc["n"])
        self._head_guesses.saw(counter_id, value)
        return value

    async def _compare_and_add(self, app_id: str, counts: Mapping[str, int], may_guess: bool = False) -> dict[str, int]:
        """One round for many counters: the new values of those raised, absent the others.

        Each counter is read, then updated only if it still holds what was read:
        ``{_id, n: head}`` -> ``$inc n``, with upsert. If another writer got there first
        the filter matches nothing, the upsert tries to insert a second document with
        that ``_id``, and the unique ``_id`` index refuses it: a duplicate-key error at
        that operation's index, so each counter's outcome is known exactly, in two round
        trips for any number of channels (a thousand ``find_one_and_update`` were 40% of
        collect's time on batches). A counter never written (head 0) is created by the
        upsert as ``n = count``. MongoDB retries an upsert's duplicate key itself only when
        the filter is equality on exactly the index's fields and the update leaves them
        alone; this filter has ``n`` too and changes it, so the error always comes back.

        With ``may_guess`` the heads are the values this process last wrote, when it knows
        every one (``head_guesses.py``): one round trip, and a stale guess is just a lost race.
        """
        channels = list(counts)
        ids = [_counter_id(app_id, channel) for channel in channels]
        guessed = self._head_guesses.guess(ids) if may_guess else None
        if guessed is None:
            read = await self.channel_heads(app_id, channels)
            heads = [read[channel] for channel in channels]
        else:
            heads = guessed
        updates = [
            UpdateOne({"_id": counter_id, "n": head}, {"$inc": {"n": counts[channel]}}, upsert=True)
            for counter_id, head, channel in zip(ids, heads, channels, strict=True)
        ]
        try:
            lost = await self._write_compared(updates)
        except BaseException:
            self._head_guesses.forget(ids)  # whether any was raised is unknown now
            raise
        if guessed is not None:
            self._head_guesses.settled(lost_any=bool(lost))
        allocated: dict[str, int] = {}
        for index, channel in enumerate(channels):
            if index in lost:
                self._head_guesses.forget([ids[index]])
            else:
                allocated[channel] = heads[index] + counts[channel]
                self._head_guesses.saw(ids[index], allocated[channel])
        return allocated

    async def _write_compared(self, updates: list[UpdateOne]) -> set[int]:
        """The indexes of the updates that lost their race (a duplicate key); any other
        failure raises."""
        try:
            await self._counters.bulk_write(updates, ordered=False)
        except BulkWriteError as exc:
            return {int(error["index"]) for error in duplicates_only(exc)}
        return set()

    async def channel_heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        with translated():
            return await with_retries("reading offset counters", lambda: self._heads(app_id, channels), self._timeout_s)

    async def _heads(self, app_id: str, channels: Sequence[str]) -> dict[str, int]:
        ids = {_counter_id(app_id, channel): channel for channel in channels}
        if not ids:
            return {}
        # All in the first reply (one small document per counter): with the server's default
        # first batch (101) a thousand channels cost ten more round trips.
        counters = self._counters.find({"_id": {"$in": list(ids)}}, batch_size=len(ids))
        found = {ids[doc["_id"]]: int(doc["n"]) async for doc in counters}
        # A channel never written has no counter yet: its head is 0, the offset before the first.
        return {channel: found.get(channel, 0) for channel in ids.values()}


def _counter_id(app_id: str, channel: str) -> str:
    return f"{app_id}|{channel}"
