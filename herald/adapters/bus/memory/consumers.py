"""The in-process bus's consumers: one message at a time (``Consumer``), or a dispatch batch
kept out of its queue until its work settles (``BatchConsumer``), with RabbitMQ's rules for
failures (herald/adapters/bus/base.py)."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING

from herald.adapters.bus.base import (
    HANDLE_AT_ONCE,
    REDELIVERY_PAUSE_S,
    RESUBSCRIBE_FIRST_S,
    BatchHandler,
    Handler,
    OnChange,
    Settler,
)
from herald.adapters.bus.memory.queues import Item, Queue
from herald.core.errors import Unavailable

if TYPE_CHECKING:
    from herald.adapters.bus.memory.bus import MemoryBus

log = logging.getLogger("herald.adapters.bus.memory")

# How long stop_consuming lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0


class Subscription(ABC):
    """One subscription's task: ``stop`` lets a handler that is running finish (within
    ``HANDLER_GRACE_S``), and cancels one that is only waiting for a body or for room."""

    def __init__(self, bus: MemoryBus, queue: Queue, on_change: OnChange | None) -> None:
        self._bus = bus
        self.queue = queue
        self._on_change = on_change
        self._busy = False
        self._stopping = False
        self._subscribed = asyncio.Event()
        self._subscribed.set()
        self._rejecting: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._run(), name=f"herald-bus-consumer:{self.name}")

    @property
    def name(self) -> str:
        return self.queue.label

    @abstractmethod
    async def _run(self) -> None:
        """Take bodies from the mailbox and handle them until stopped."""

    def alive(self) -> bool:
        return self._subscribed.is_set() and not self._task.done()

    async def stop(self) -> None:
        self._stopping = True
        if not self._busy:
            self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=HANDLER_GRACE_S)
        if not done:
            log.warning("consumer %s: handler still running after %ss, cancelled", self.name, HANDLER_GRACE_S)
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._rejecting):
            task.cancel()  # their messages go back to the queue as they unwind
        await asyncio.gather(*self._rejecting, return_exceptions=True)

    def lose(self) -> None:
        """Pretend the subscription was lost; it comes back after a short wait, as on RabbitMQ."""
        if not self._subscribed.is_set() or self._stopping:
            return
        self._subscribed.clear()
        self._changed(False)
        asyncio.get_running_loop().call_later(RESUBSCRIBE_FIRST_S, self._resubscribe)

    def _resubscribe(self) -> None:
        if self._stopping:
            return
        self._subscribed.set()
        self._changed(True)

    def _changed(self, subscribed: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(subscribed)
            except Exception:
                log.exception("consumer %s: on_change(%s) failed", self.name, subscribed)

    def _reject_later(self, item: Item) -> None:
        """A work-queue message failed: back at the head after the pause, counting one
        failure, or parked once that makes more than the limit. Off the consumer's path."""
        task = asyncio.create_task(self._reject(item), name=f"herald-bus-reject:{self.name}")
        self._rejecting.add(task)
        task.add_done_callback(self._rejecting.discard)

    async def _reject(self, item: Item) -> None:
        try:
            await asyncio.sleep(REDELIVERY_PAUSE_S)
        except asyncio.CancelledError:
            self.queue.mailbox.put_front(item)  # stopping: given back, uncounted, as a channel close would
            raise
        item.failures += 1
        if item.failures > self._bus.delivery_limit:
            self._bus.park(self.name, item)
        else:
            self.queue.mailbox.put_front(item)


class Consumer(Subscription):
    """One subscription: takes messages one at a time and settles each before the next."""

    def __init__(self, bus: MemoryBus, queue: Queue, handler: Handler, on_change: OnChange | None) -> None:
        self._handler = handler
        super().__init__(bus, queue, on_change)

    async def _run(self) -> None:
        while not self._stopping:
            await self._subscribed.wait()
            item = await self.queue.mailbox.get()
            self._busy = True
            try:
                await self._deliver(item)
            finally:
                self._busy = False

    async def _deliver(self, item: Item) -> None:
        while True:
            try:
                await self._handler(item.body)
                return
            except asyncio.CancelledError:
                self.queue.mailbox.put_front(item)
                raise
            except Unavailable as exc:
                if not self.queue.work:
                    break
                log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
                if not await self._pause_keeping(item):
                    return
            except Exception:
                if not self.queue.work:
                    break
                log.exception("consumer %s: handler failed; the message comes back later", self.name)
                self._reject_later(item)
                return
        log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
        try:
            await asyncio.sleep(REDELIVERY_PAUSE_S)
        finally:
            self.queue.mailbox.put_front(item)

    async def _pause_keeping(self, item: Item) -> bool:
        """Wait before trying ``item`` again; False (and ``item`` given back) when stopping."""
        try:
            await asyncio.sleep(REDELIVERY_PAUSE_S)
        except asyncio.CancelledError:
            self.queue.mailbox.put_front(item)
            raise
        if self._stopping:
            self.queue.mailbox.put_front(item)
            return False
        return True


class BatchConsumer(Subscription):
    """A dispatch consumer: every queued body (up to ``HANDLE_AT_ONCE``) in one handler
    call, kept out of the queue until the work the handler started settles. Cancelled
    while waiting for room or a body, it still drains what is settling."""

    def __init__(self, bus: MemoryBus, queue: Queue, handler: BatchHandler, on_change: OnChange | None) -> None:
        self._handler = handler
        self._held: deque[tuple[list[Item], bool]] = deque()
        self._attention = asyncio.Event()  # set when a batch was held while the consumer waited for bodies
        self._settler: Settler[Item] = Settler(queue.label, self._forget, self._failed, self._put_back)
        super().__init__(bus, queue, on_change)

    async def _next(self) -> tuple[list[Item], bool]:
        """What to handle next: a held batch first, else what the queue has (waiting for it)."""
        mailbox = self.queue.mailbox
        while True:
            if self._held:
                return self._held.popleft()
            if len(mailbox):
                return mailbox.take(HANDLE_AT_ONCE), False
            self._attention.clear()
            waits = {asyncio.ensure_future(mailbox.readable()), asyncio.ensure_future(self._attention.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._settler.room()
                await self._subscribed.wait()
                batch, one_by_one = await self._next()
                self._busy = True
                try:
                    if one_by_one:
                        await self._one_by_one(batch)
                    else:
                        await self._start(batch)
                finally:
                    self._busy = False
        finally:
            held = [item for batch, _ in self._held for item in batch]
            self._held.clear()
            await self._put_back(held)
            await self._settler.drain()

    async def _start(self, batch: list[Item]) -> None:
        try:
            settled = await self._handler([item.body for item in batch])
        except asyncio.CancelledError:
            await self._put_back(batch)
            raise
        except Unavailable as exc:
            log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
            self._settler.pause()
            self._held.appendleft((batch, False))
            return
        except Exception:
            log.exception("consumer %s: handler failed; handling the batch one by one", self.name)
            self._settler.pause()
            self._held.appendleft((batch, True))
            return
        self._settler.add(batch, settled)

    async def _one_by_one(self, batch: list[Item]) -> None:
        for index, item in enumerate(batch):
            try:
                await (await self._handler([item.body]))
            except asyncio.CancelledError:
                await self._put_back(batch[index:])
                raise
            except Unavailable as exc:
                log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
                self._settler.pause()
                self._held.appendleft((batch[index:], True))
                return
            except Exception:
                log.exception("consumer %s: a message failed on its own; it comes back later", self.name)
                self._reject_later(item)

    async def _failed(self, batch: list[Item], failure: BaseException) -> None:
        # Unavailable: the same batch again; anything else: one by one, to find the culprit.
        self._held.append((batch, not isinstance(failure, Unavailable)))
        self._attention.set()

    async def _forget(self, batch: list[Item]) -> None:
        """Settled: the bodies are done with (a broker's ack)."""

    async def _put_back(self, batch: list[Item]) -> None:
        for item in reversed(batch):
            self.queue.mailbox.put_front(item)
