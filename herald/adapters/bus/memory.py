"""The bus in-process, for standalone mode: the RabbitMQ topology as asyncio queues.

One instance models one process talking to one broker: the dispatch queue exists from
the start (so publishes before any consumer are kept, as with a durable queue), any
number of ``consume_dispatch`` consumers compete for it, and ``consume_node`` creates
the node's queue. Dispatch consumers take batches as on RabbitMQ: what they took stays
out of the queue until its work settles.

Failures follow the same rules as on RabbitMQ's quorum queues (``herald.adapters.bus.base``):
the work queues (dispatch, receipts, retries) keep a message whose handler met
``Unavailable`` and try it again after the pause; any other failure puts it back at the
head of its queue counting one failed delivery, and one failure more than
``delivery_limit`` parks it in the dead letters (``dead_letters``, ``replay_dead``,
``drop_dead``; at most ``DEAD_MAX``, the oldest dropped first with a warning). Node and
events queues put a failed message back at their head after the pause, as before.

The retries lane is in this process only: a retry waits in an event-loop timer, so it is
lost when the process stops (standalone has no broker to keep it). At most
``RETRIES_MAX`` wait at once; beyond that ``publish_retry`` raises ``Unavailable``.

Bounds: a node queue holds at most ``NODE_QUEUE_MAX`` messages; a publish to a full one
waits up to ``PUBLISH_TIMEOUT_S`` for room, then raises ``Unavailable`` (dispatch
retries) instead of dropping anything. Publishes to one node take turns in the order they
were called, so one that waited for room is never overtaken by a later one that found
some (dispatch keeps several batches' publishes going at once). The dispatch queue is
unbounded: everything in it is already in the store, so its size is bounded by what
collect accepted, and refusing it here would only move the same backlog to the outbox.

Events: ``consume_events`` declares its group's queue (once, then it stays, as a durable
queue does) and adds its patterns to the group's bindings; ``publish_event`` puts a copy
in every group with a matching pattern (``herald.events.topic_matches``) and drops the
event when none matches, as an unbound topic exchange does. A group's queue keeps at most
``EVENTS_QUEUE_MAX`` events and then drops the oldest (RabbitMQ's ``x-max-length``): a
notification must never make its publisher (a push node) wait for a slow webhook.

Subscriptions cannot be lost in one process; ``lose_subscriptions`` pretends they were
(a test hook), so code built on ``on_change`` and ``consuming`` is tested here as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from herald.adapters.bus.base import (
    DELIVERY_LIMIT,
    HANDLE_AT_ONCE,
    REDELIVERY_PAUSE_S,
    RESUBSCRIBE_FIRST_S,
    BatchHandler,
    Bus,
    DeadLetter,
    Handler,
    OnChange,
    Settler,
    parked,
)
from herald.core.errors import Unavailable
from herald.messaging.events import topic_matches

log = logging.getLogger(__name__)

NODE_QUEUE_MAX = 10_000
PUBLISH_TIMEOUT_S = 5.0
# How long stop_consuming lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0
# Events one group's queue keeps before dropping the oldest; the same bound as AmqpBus.
EVENTS_QUEUE_MAX = 100_000
# Retries waiting for their time, and dead letters kept, in this process.
RETRIES_MAX = 10_000
DEAD_MAX = 10_000


@dataclass(slots=True)
class _Item:
    """One message in a queue, with what a broker would keep about it."""

    body: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    failures: int = 0


class _Mailbox:
    """A FIFO that can take a message back at its head, as a broker requeue does."""

    def __init__(self, maxsize: int = 0) -> None:
        self._items: deque[_Item] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: _Item) -> None:
        while self._maxsize and len(self._items) >= self._maxsize:
            await self._writable.wait()
        self._items.append(item)
        self._changed()

    def put_dropping_head(self, item: _Item) -> bool:
        """Append without waiting; when full, drop the oldest first. True if one was dropped."""
        dropped = bool(self._maxsize) and len(self._items) >= self._maxsize
        if dropped:
            self._items.popleft()
        self._items.append(item)
        self._changed()
        return dropped

    def put_front(self, item: _Item) -> None:
        """Return a message taken with ``get``; its room was never given away, so no wait."""
        self._items.appendleft(item)
        self._changed()

    async def get(self) -> _Item:
        while not self._items:
            await self._readable.wait()
        item = self._items.popleft()
        self._changed()
        return item

    async def readable(self) -> None:
        """Return once the mailbox holds something (another consumer may take it first)."""
        await self._readable.wait()

    def take(self, most: int) -> list[_Item]:
        """Up to ``most`` messages from the head, without waiting."""
        taken = [self._items.popleft() for _ in range(min(most, len(self._items)))]
        if taken:
            self._changed()
        return taken

    def _changed(self) -> None:
        if self._items:
            self._readable.set()
        else:
            self._readable.clear()
        if self._maxsize and len(self._items) >= self._maxsize:
            self._writable.clear()
        else:
            self._writable.set()


@dataclass(frozen=True, slots=True)
class _Queue:
    """A queue as its consumers see it: the mailbox, and the rules for failures."""

    label: str
    mailbox: _Mailbox
    work: bool = False

    def __len__(self) -> int:
        return len(self.mailbox)

    @property
    def _items(self) -> list[bytes]:
        """The bodies waiting, in order: what tests that look inside the in-process bus read."""
        return [item.body for item in self.mailbox._items]


class _Subscription(ABC):
    """One subscription's task: ``stop`` lets a handler that is running finish (within
    ``HANDLER_GRACE_S``), and cancels one that is only waiting for a body or for room."""

    def __init__(self, bus: MemoryBus, queue: _Queue, on_change: OnChange | None) -> None:
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

    def _reject_later(self, item: _Item) -> None:
        """A work-queue message failed: back at the head after the pause, counting one
        failure, or parked once that makes more than the limit. Off the consumer's path."""
        task = asyncio.create_task(self._reject(item), name=f"herald-bus-reject:{self.name}")
        self._rejecting.add(task)
        task.add_done_callback(self._rejecting.discard)

    async def _reject(self, item: _Item) -> None:
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


class _Consumer(_Subscription):
    """One subscription: takes messages one at a time and settles each before the next."""

    def __init__(self, bus: MemoryBus, queue: _Queue, handler: Handler, on_change: OnChange | None) -> None:
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

    async def _deliver(self, item: _Item) -> None:
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

    async def _pause_keeping(self, item: _Item) -> bool:
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


class _BatchConsumer(_Subscription):
    """A dispatch consumer: every queued body (up to ``HANDLE_AT_ONCE``) in one handler
    call, kept out of the queue until the work the handler started settles. Cancelled
    while waiting for room or a body, it still drains what is settling."""

    def __init__(self, bus: MemoryBus, queue: _Queue, handler: BatchHandler, on_change: OnChange | None) -> None:
        self._handler = handler
        self._held: deque[tuple[list[_Item], bool]] = deque()
        self._attention = asyncio.Event()  # set when a batch was held while the consumer waited for bodies
        self._settler: Settler[_Item] = Settler(queue.label, self._forget, self._failed, self._put_back)
        super().__init__(bus, queue, on_change)

    async def _next(self) -> tuple[list[_Item], bool]:
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

    async def _start(self, batch: list[_Item]) -> None:
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

    async def _one_by_one(self, batch: list[_Item]) -> None:
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

    async def _failed(self, batch: list[_Item], failure: BaseException) -> None:
        # Unavailable: the same batch again; anything else: one by one, to find the culprit.
        self._held.append((batch, not isinstance(failure, Unavailable)))
        self._attention.set()

    async def _forget(self, batch: list[_Item]) -> None:
        """Settled: the bodies are done with (a broker's ack)."""

    async def _put_back(self, batch: list[_Item]) -> None:
        for item in reversed(batch):
            self.queue.mailbox.put_front(item)


@dataclass(slots=True)
class _EventGroup:
    """One group's queue and the patterns bound to it."""

    mailbox: _Mailbox = field(default_factory=lambda: _Mailbox(EVENTS_QUEUE_MAX))
    patterns: set[str] = field(default_factory=set)

    def wants(self, routing_key: str) -> bool:
        return any(topic_matches(pattern, routing_key) for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class _Parked:
    queue: str
    item: _Item
    at_ms: int


class MemoryBus(Bus):
    def __init__(self, delivery_limit: int = DELIVERY_LIMIT) -> None:
        self.delivery_limit = delivery_limit
        self._dispatch = _Queue("dispatch", _Mailbox(), work=True)
        self._receipts = _Queue("receipts", _Mailbox(), work=True)
        self._retries = _Queue("retries", _Mailbox(), work=True)
        self._nodes: dict[str, _Mailbox] = {}
        self._turns: dict[str, asyncio.Future[None]] = {}  # per node: the last publish's turn
        self._event_groups: dict[str, _EventGroup] = {}
        self._consumers: list[_Subscription] = []
        self._waiting_retries: set[asyncio.TimerHandle] = set()
        self._dead: deque[_Parked] = deque()
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        await self.stop_consuming()
        if self._waiting_retries:
            log.warning(
                "closing with %d retries still waiting; standalone keeps them in memory only, so they are lost",
                len(self._waiting_retries),
            )
        for timer in self._waiting_retries:
            timer.cancel()
        self._waiting_retries.clear()
        self._nodes.clear()
        self._closed = True

    async def ping(self) -> None:
        self._check_open()

    def lose_subscriptions(self) -> None:
        """Test hook: every subscription is lost at once and comes back by itself."""
        for consumer in self._consumers:
            consumer.lose()

    def park(self, queue: str, item: _Item) -> None:
        """Move a message that failed too often to the dead letters, logged and counted."""
        if len(self._dead) >= DEAD_MAX:
            dropped = self._dead.popleft()
            log.warning("%d dead letters kept in memory; dropped the oldest (%s)", DEAD_MAX, dropped.item.id)
        self._dead.append(_Parked(queue, item, int(time.time() * 1000)))
        parked(queue, item.body, item.failures, message_id=item.id)

    # Publishing ----------------------------------------------------------------------
    async def publish_dispatch(self, body: bytes) -> None:
        self._check_open()
        await self._dispatch.mailbox.put(_Item(body))

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        self._check_open()
        puts: list[asyncio.Future[None]] = []
        for node, body in bodies.items():
            if node not in self._nodes:
                continue  # a node without a queue is not listening: its users resume from the store
            # Line up behind the node's previous publish now, before anything awaits.
            mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            before = self._turns.get(node)
            self._turns[node] = mine
            put = asyncio.ensure_future(self._put_after(before, self._nodes[node], _Item(body)))
            # A callback, so the turn passes even when the put is cancelled before it ran.
            put.add_done_callback(partial(self._end_turn, node, mine))
            puts.append(put)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await asyncio.gather(*puts)
        except TimeoutError as exc:
            raise Unavailable("a node queue stayed full; its node is not keeping up") from exc

    @staticmethod
    async def _put_after(before: asyncio.Future[None] | None, mailbox: _Mailbox, item: _Item) -> None:
        if before is not None:
            await asyncio.wait({before})  # not cancelling it when this put gives up
        await mailbox.put(item)

    def _end_turn(self, node: str, mine: asyncio.Future[None], _: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._turns.get(node) is mine:
            del self._turns[node]

    async def publish_receipts(self, body: bytes) -> None:
        self._check_open()
        await self._receipts.mailbox.put(_Item(body))

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        self._check_open()
        for name, group in self._event_groups.items():
            if group.wants(routing_key) and group.mailbox.put_dropping_head(_Item(body)):
                log.warning("events queue %s is full (%s); dropped its oldest event", name, EVENTS_QUEUE_MAX)

    async def publish_retry(self, body: bytes, delay_s: float) -> None:
        self._check_open()
        if len(self._waiting_retries) >= RETRIES_MAX:
            raise Unavailable(f"{RETRIES_MAX} retries already waiting in this process")
        item = _Item(body)

        def due() -> None:
            self._waiting_retries.discard(timer)
            self._retries.mailbox.put_dropping_head(item)  # unbounded: appends, never drops

        timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), due)
        self._waiting_retries.add(timer)

    # Consuming -----------------------------------------------------------------------
    async def consume_receipts(self, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(_Consumer(self, self._receipts, handler, on_change))

    async def consume_dispatch(self, handler: BatchHandler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(_BatchConsumer(self, self._dispatch, handler, on_change))

    async def consume_retries(self, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(_Consumer(self, self._retries, handler, on_change))

    async def consume_node(self, node_id: str, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        mailbox = self._nodes.setdefault(node_id, _Mailbox(NODE_QUEUE_MAX))
        self._consumers.append(_Consumer(self, _Queue(f"node:{node_id}", mailbox), handler, on_change))

    async def consume_events(
        self, group: str, patterns: Sequence[str], handler: Handler, on_change: OnChange | None = None
    ) -> None:
        self._check_open()
        declared = self._event_groups.setdefault(group, _EventGroup())
        declared.patterns.update(patterns)
        self._consumers.append(_Consumer(self, _Queue(f"events:{group}", declared.mailbox), handler, on_change))

    async def stop_consuming(self) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.stop() for consumer in consumers))

    def consuming(self) -> bool:
        return bool(self._consumers) and all(consumer.alive() for consumer in self._consumers)

    # Operators -----------------------------------------------------------------------
    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        depths = {
            "dispatch": len(self._dispatch.mailbox),
            "receipts": len(self._receipts.mailbox),
            "retries": len(self._retries.mailbox),
            "dead": len(self._dead),
        }
        depths.update({f"node:{node}": len(self._nodes[node]) for node in node_ids if node in self._nodes})
        depths.update(
            {
                f"events:{group}": len(self._event_groups[group].mailbox)
                for group in event_groups
                if group in self._event_groups
            }
        )
        return depths

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return [
            DeadLetter(p.item.id, p.queue, "delivery_limit", p.item.failures, p.at_ms, p.item.body)
            for p in list(self._dead)[: max(0, limit)]
        ]

    async def replay_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        chosen = self._take_dead(ids, limit)
        queues = {"dispatch": self._dispatch, "receipts": self._receipts, "retries": self._retries}
        for letter in chosen:
            await queues[letter.queue].mailbox.put(_Item(letter.item.body, id=letter.item.id))
        return len(chosen)

    async def drop_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        return len(self._take_dead(ids, limit))

    def _take_dead(self, ids: Sequence[str] | None, limit: int) -> list[_Parked]:
        wanted = None if ids is None else set(ids)
        taken: list[_Parked] = []
        kept: deque[_Parked] = deque()
        for letter in self._dead:
            if len(taken) < limit and (wanted is None or letter.item.id in wanted):
                taken.append(letter)
            else:
                kept.append(letter)
        self._dead = kept
        return taken

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the bus is closed")
