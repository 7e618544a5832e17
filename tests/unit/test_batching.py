"""The batching primitive: wait briefly, then write in one batch."""

from __future__ import annotations

import asyncio
import logging

import pytest

from herald.core.batching import Batcher


class Writes:
    """A writer that records its batches, answers each item doubled, and can be held or failed."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failure: Exception | None = None
        self.started = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.started += 1
        await self.open.wait()
        if self.failure is not None:
            raise self.failure
        self.batches.append(list(items))
        return [item * 2 for item in items]


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def until_started(writes: Writes, count: int) -> None:
    for _ in range(1000):
        if writes.started >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} writes never started")


async def test_items_submitted_in_one_loop_turn_share_one_batch() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    await asyncio.gather(*(batcher.submit(n) for n in range(5)))
    assert writes.batches == [[0, 1, 2, 3, 4]]


async def test_each_waiter_gets_its_own_items_result() -> None:
    batcher: Batcher[int, int] = Batcher(Writes(), name="test")
    assert await asyncio.gather(*(batcher.submit(n) for n in (1, 2, 3))) == [2, 4, 6]


async def test_a_failed_write_fails_every_waiter_of_its_batch() -> None:
    writes = Writes()
    writes.failure = ValueError("store down")
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)


async def test_a_write_answering_the_wrong_number_of_results_fails_its_waiters() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher: Batcher[int, int] = Batcher(short, name="test")
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)


async def test_a_batch_holds_at_most_max_batch_by_size() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", max_batch=4, size=lambda item: item)
    await asyncio.gather(*(batcher.submit(n) for n in (2, 2, 1, 3)))
    assert writes.batches == [[2, 2], [1, 3]]


async def test_an_item_larger_than_max_batch_is_a_batch_of_its_own() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", max_batch=2, size=lambda item: item)
    await asyncio.gather(batcher.submit(5), batcher.submit(1))
    assert writes.batches == [[5], [1]]


async def test_a_full_batch_does_not_wait_for_the_linger() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", linger_s=3600, max_batch=3)
    # A bound on the test, not a speed check: the linger alone would take an hour.
    await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(3))), 30)
    assert writes.batches == [[0, 1, 2]]


async def test_items_added_while_the_first_lingers_share_its_batch() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", linger_s=3600)
    for n in range(3):
        batcher.add([n])
        await turns()
    assert writes.batches == []
    await batcher.flush()
    assert writes.batches == [[0, 1, 2]]


async def test_items_arriving_while_a_batch_is_written_go_together_in_the_next() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    batcher.add([1])
    await until_started(writes, 1)
    for n in (2, 3, 4):
        batcher.add([n])
        await turns()
    writes.open.set()
    await batcher.flush()
    assert writes.batches == [[1], [2, 3, 4]]


async def test_with_one_slot_batches_are_written_in_arrival_order_one_at_a_time() -> None:
    order: list[str] = []

    async def write(items: list[int]) -> None:
        order.append(f"start {items}")
        await turns(3)
        order.append(f"end {items}")

    batcher: Batcher[int, None] = Batcher(write, name="test", max_batch=1)
    batcher.add([1, 2, 3])
    await batcher.flush()
    assert order == ["start [1]", "end [1]", "start [2]", "end [2]", "start [3]", "end [3]"]


async def test_with_two_slots_the_next_batch_is_written_while_the_first_is_out() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test", max_in_flight=2)
    first = asyncio.ensure_future(batcher.submit(1))
    await until_started(writes, 1)
    second = asyncio.ensure_future(batcher.submit(2))
    await until_started(writes, 2)
    writes.open.set()
    assert await asyncio.gather(first, second) == [2, 4]


async def test_while_every_slot_is_busy_the_next_batch_keeps_growing() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test", busy_linger_s=0)
    first = asyncio.ensure_future(batcher.submit(1))
    await until_started(writes, 1)
    later = []
    for n in (2, 3, 4):
        later.append(asyncio.ensure_future(batcher.submit(n)))
        await turns()
    writes.open.set()
    await asyncio.gather(first, *later)
    assert writes.batches == [[1], [2, 3, 4]]


async def test_a_waiter_that_gives_up_before_its_batch_is_taken_is_left_out() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    first = asyncio.ensure_future(batcher.submit(1))
    await until_started(writes, 1)
    gone = asyncio.ensure_future(batcher.submit(2))
    kept = asyncio.ensure_future(batcher.submit(3))
    await turns()
    gone.cancel()
    writes.open.set()
    assert await asyncio.gather(first, kept) == [2, 6]
    assert writes.batches == [[1], [3]]


async def test_a_shielded_waiter_that_gives_up_is_still_written() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    first = asyncio.ensure_future(batcher.submit(1))
    await until_started(writes, 1)
    closing = asyncio.ensure_future(asyncio.shield(batcher.put(2)))
    await turns()
    closing.cancel()
    writes.open.set()
    await first
    await batcher.flush()
    assert writes.batches == [[1], [2]]


async def test_flush_writes_at_once_and_waits_for_the_write() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", linger_s=3600)
    batcher.add([1, 2])
    await asyncio.wait_for(batcher.flush(), 30)  # a bound on the test, not a speed check
    assert writes.batches == [[1, 2]]


async def test_flush_with_nothing_queued_returns_at_once() -> None:
    batcher: Batcher[int, int] = Batcher(Writes(), name="test")
    await asyncio.wait_for(batcher.flush(), 30)
    assert batcher.pending == 0


async def test_an_item_queued_after_a_flush_still_lingers() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test", linger_s=3600)
    batcher.add([1])
    first = asyncio.ensure_future(batcher.flush())
    await until_started(writes, 1)
    second = asyncio.ensure_future(batcher.flush())  # nothing queued, one write in flight
    await turns()
    writes.open.set()
    await asyncio.gather(first, second)
    batcher.add([2])
    await turns()
    assert (writes.batches, batcher.pending) == ([[1]], 1)


async def test_flush_waits_for_a_write_already_in_flight() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    batcher.add([1])
    await until_started(writes, 1)
    flushed = asyncio.ensure_future(batcher.flush())
    await turns()
    assert not flushed.done()
    writes.open.set()
    await flushed
    assert writes.batches == [[1]]


async def test_close_writes_what_is_queued_and_refuses_later_submits() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", linger_s=3600)
    batcher.add([1])
    await batcher.close()
    assert writes.batches == [[1]]
    with pytest.raises(RuntimeError):
        await batcher.submit(2)


async def test_without_background_nothing_is_written_until_flushed_or_started() -> None:
    writes = Writes()
    batcher: Batcher[int, int] = Batcher(writes, name="test", background=False)
    batcher.add([1, 2])
    await turns()
    assert (writes.batches, batcher.pending) == ([], 2)
    batcher.start()
    await batcher.flush()
    assert writes.batches == [[1, 2]]


async def test_a_cancelled_gathering_task_leaves_no_waiter_waiting() -> None:
    batcher: Batcher[int, int] = Batcher(Writes(), name="test", linger_s=3600)
    waiting = asyncio.ensure_future(batcher.submit(1))
    await turns()
    for task in batcher.tasks:  # what the loop does to leftover tasks at shutdown
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_cancelled_write_cancels_its_waiters() -> None:
    writes = Writes()
    writes.open.clear()
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    waiting = asyncio.ensure_future(batcher.submit(1))
    await until_started(writes, 1)
    for task in batcher.tasks:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_failed_batch_nobody_waits_for_is_logged_and_later_batches_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writes = Writes()
    writes.failure = ValueError("store down")
    batcher: Batcher[int, int] = Batcher(writes, name="test")
    with caplog.at_level(logging.ERROR, logger="herald.batching"):
        batcher.add([1])
        await batcher.flush()
    assert "a batch of 1 failed" in caplog.text
    writes.failure = None
    batcher.add([2])
    await batcher.flush()
    assert writes.batches == [[2]]
