"""Wait briefly, then write in one batch: the one primitive behind every writer that turns
many small writes into few large ones.

A store or directory round trip costs more than the items it carries, so collect's group
commit, the published marks, dispatch's statuses and the push node's presence all queue
their items and write them together. ``Batcher`` is that queue, written once:

- items wait in one pending list; one gathering task takes them out in batches of at most
  ``max_batch`` (by ``size``, one per item unless told otherwise; an item larger than that
  is a batch of its own) and hands each to ``write``;
- the first item to find nothing being written waits ``linger_s`` for company; while a
  batch is out, the next one gathers for ``busy_linger_s`` and keeps growing until one of
  the ``max_in_flight`` write slots is free; a batch that reaches ``max_batch`` goes at
  once, and so does everything when ``flush()`` or ``close()`` asks;
- ``submit`` waits for its item's own result (what ``write`` returned for it) or its
  batch's error; a waiter that gives up before its batch is taken is left out of it.
  ``add`` queues without waiting: a failure of its batch is logged instead;
- cancelled (the loop shutting down), the batcher leaves nobody waiting: every waiter of
  a batch not written gets ``CancelledError``.

Batches are taken in arrival order and, with one slot, written one after the other, so a
later item is never written before an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("herald.batching")


@dataclass(slots=True)
class _Entry(Generic[T, R]):
    item: T
    waiter: asyncio.Future[R] | None  # None: queued by add(), nobody waits for it
    size: int


class Batcher(Generic[T, R]):
    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[Sequence[R] | None]],
        *,
        name: str,
        linger_s: float = 0.0,
        busy_linger_s: float = 0.0,
        max_batch: int | None = None,
        max_in_flight: int = 1,
        size: Callable[[T], int] | None = None,
        background: bool = True,
    ) -> None:
        """``write`` gets a batch and returns one result per item (or None: no results); it
        raises to fail the whole batch. ``background=False``: nothing is written until
        ``start()`` or ``flush()``."""
        self._write = write
        self._name = name
        self._linger_s = linger_s
        self._busy_linger_s = busy_linger_s
        self._max_batch = max_batch
        self._size = size
        self._background = background
        self._slots = asyncio.Semaphore(max_in_flight)
        self._entries: list[_Entry[T, R]] = []
        self._pending_size = 0
        self._gatherer: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # set to cut a linger short: a batch filled up, or a flush came
        self._closed = False
        # Entries are numbered in arrival order; flush() waits for a number to be completed.
        self._taken = 0  # entries taken out of the pending list so far
        self._completed = 0  # every entry below this number is written, failed or dropped
        self._finished: dict[int, int] = {}  # batches done out of order: start -> end
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0  # batches handed to write

    @property
    def pending(self) -> int:
        """Items queued and not yet taken into a batch."""
        return len(self._entries)

    def sizes(self) -> dict[str, int]:
        """What it holds: all back to 0 once everything queued is written (churn tests)."""
        return {
            "pending": len(self._entries),
            "writes": sum(not write.done() for write in self._writes),
            "flushes": len(self._flushes),
            "finished_out_of_order": len(self._finished),
        }

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The gathering task and the writes in flight."""
        gatherer = {self._gatherer} if self._gatherer is not None else set()
        return frozenset(gatherer | self._writes)

    def add(self, items: Iterable[T]) -> None:
        """Queue items for the next batches without waiting for them."""
        for item in items:
            self._queue(item, None)
        if self._background:
            self._start_gathering()

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result; cancelling the wait before the item's batch
        is taken leaves the item out."""
        return await self.put(item)

    def put(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now; the future is its result. Await it through ``asyncio.shield``
        to keep the item in its batch even if the waiter gives up."""
        if self._closed:
            raise RuntimeError(f"{self._name}: submitted after close()")
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue(item, waiter)
        self._start_gathering()
        return waiter

    def start(self) -> None:
        """Write in the background from now on (for a batcher made with ``background=False``)."""
        self._background = True
        if self._entries:
            self._start_gathering()

    async def flush(self) -> None:
        """Write everything queued so far at once, and wait until it is written (or failed)."""
        target = self._taken + len(self._entries)
        if self._completed >= target:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((target, done))
        self._wake.set()
        self._start_gathering()
        await done

    async def close(self) -> None:
        """Flush, then stop writing in the background: later ``add``s wait for a ``flush``,
        and ``submit`` refuses (nobody would answer it)."""
        await self.flush()
        self._closed = True
        self._background = False

    def _queue(self, item: T, waiter: asyncio.Future[R] | None) -> None:
        size = 1 if self._size is None else self._size(item)
        self._entries.append(_Entry(item, waiter, size))
        self._pending_size += size
        if self._max_batch is not None and self._pending_size >= self._max_batch:
            self._wake.set()

    def _start_gathering(self) -> None:
        if self._gatherer is None and self._entries:
            self._gatherer = asyncio.get_running_loop().create_task(self._gather(), name=self._name)
            self._gatherer.add_done_callback(self._gathering_ended)

    async def _gather(self) -> None:
        while self._entries:
            await self._linger()
            await self._slots.acquire()
            # Taken only now: while every slot is busy, the batch keeps growing.
            start = self._taken
            batch = self._take()
            if not any(entry.waiter is None or not entry.waiter.done() for entry in batch):
                self._slots.release()  # every waiter gave up: nothing to write
                self._finish(start, self._taken)
                continue
            self.batches += 1
            task = asyncio.get_running_loop().create_task(self._write_batch(batch, start, self._taken))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    def _urgent(self) -> bool:
        """A flush is waiting, or a full batch is: no lingering."""
        return bool(self._flushes) or (self._max_batch is not None and self._pending_size >= self._max_batch)

    async def _linger(self) -> None:
        if self._urgent():
            return
        delay = self._busy_linger_s if self._writes else self._linger_s
        if delay <= 0:
            await asyncio.sleep(0)  # the rest of this event-loop turn's items
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    def _take(self) -> list[_Entry[T, R]]:
        """The oldest entries, up to ``max_batch`` (at least one), waiters that gave up dropped."""
        count = total = 0
        for entry in self._entries:
            if count and self._max_batch is not None and total + entry.size > self._max_batch:
                break
            count += 1
            total += entry.size
        batch, self._entries = self._entries[:count], self._entries[count:]
        self._pending_size -= total
        self._taken += count
        return [entry for entry in batch if entry.waiter is None or not entry.waiter.done()]

    async def _write_batch(self, batch: list[_Entry[T, R]], start: int, end: int) -> None:
        try:
            results = await self._write([entry.item for entry in batch])
            if results is not None and len(results) != len(batch):
                raise ValueError(f"{self._name}: {len(results)} results for a batch of {len(batch)}")
        except Exception as exc:
            for entry in batch:
                if entry.waiter is not None and not entry.waiter.done():
                    entry.waiter.set_exception(exc)
            if any(entry.waiter is None for entry in batch):
                log.exception("%s: a batch of %d failed", self._name, len(batch))
            return
        except BaseException:  # cancelled: the loop is shutting down
            for entry in batch:
                if entry.waiter is not None:
                    entry.waiter.cancel()
            raise
        finally:
            self._slots.release()
            self._finish(start, end)
        for index, entry in enumerate(batch):
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_result(cast(R, None) if results is None else results[index])

    def _finish(self, start: int, end: int) -> None:
        """Entries ``start`` to ``end`` are done: wake the flushes now complete."""
        self._finished[start] = end
        while self._completed in self._finished:
            self._completed = self._finished.pop(self._completed)
        waiting = []
        for target, done in self._flushes:
            if target <= self._completed:
                if not done.done():
                    done.set_result(None)
            else:
                waiting.append((target, done))
        self._flushes = waiting

    def _gathering_ended(self, task: asyncio.Task[None]) -> None:
        """However the gathering task ended (cancelled at shutdown, even before it ran), no
        waiter of an item it did not take is left waiting."""
        self._gatherer = None
        if not task.cancelled() and task.exception() is None:
            if self._background or self._flushes or any(entry.waiter is not None for entry in self._entries):
                self._start_gathering()  # queued just as the task was ending
            return
        if not task.cancelled():
            log.error("%s: the gathering task failed", self._name, exc_info=task.exception())
        dropped, self._entries = self._entries, []
        self._pending_size = 0
        start, self._taken = self._taken, self._taken + len(dropped)
        for entry in dropped:
            if entry.waiter is not None:
                entry.waiter.cancel()
        if dropped:
            log.warning("%s: %d queued items dropped (the writer stopped)", self._name, len(dropped))
        self._finish(start, self._taken)
