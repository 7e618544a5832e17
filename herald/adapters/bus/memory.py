"""The bus in-process, for standalone mode: the RabbitMQ topology as asyncio queues.

One instance models one process talking to one broker: the dispatch queue exists from
the start (so publishes before any consumer are kept, as with a durable queue), any
number of ``consume_dispatch`` consumers compete for it, and ``consume_node`` creates
the node's queue. A handler that raises gets its message back at the head of the queue
after ``REDELIVERY_PAUSE_S``, the way a broker requeue puts it back in place. Dispatch
consumers take batches as on RabbitMQ: what they took stays out of the queue until its
work settles, and goes back to the head of the queue if that fails.

Bounds: a node queue holds at most ``NODE_QUEUE_MAX`` messages; a publish to a full one
waits up to ``PUBLISH_TIMEOUT_S`` for room, then raises ``Unavailable`` (dispatch
requeues and retries) instead of dropping anything. Publishes to one node take turns in
the order they were called, so one that waited for room is never overtaken by a later
one that found some (dispatch keeps several batches' publishes going at once). The
dispatch queue is unbounded: everything in it is already in the store, so its size is
bounded by what collect accepted, and refusing it here would only move the same backlog
to the outbox.

Events: ``consume_events`` declares its group's queue (once, then it stays, as a durable
queue does) and adds its patterns to the group's bindings; ``publish_event`` puts a copy
in every group with a matching pattern (``herald.events.topic_matches``) and drops the
event when none matches, as an unbound topic exchange does. A group's queue keeps at most
``EVENTS_QUEUE_MAX`` events and then drops the oldest (RabbitMQ's ``x-max-length``): a
notification must never make its publisher (a push node) wait for a slow webhook.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from herald.adapters.bus.base import HANDLE_AT_ONCE, REDELIVERY_PAUSE_S, BatchHandler, Bus, Handler, Settler
from herald.core.errors import Unavailable
from herald.messaging.events import topic_matches

log = logging.getLogger(__name__)

NODE_QUEUE_MAX = 10_000
PUBLISH_TIMEOUT_S = 5.0
# How long stop_consuming lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0
# Events one group's queue keeps before dropping the oldest; the same bound as AmqpBus.
EVENTS_QUEUE_MAX = 100_000


class _Mailbox:
    """A FIFO that can take a message back at its head, as a broker requeue does."""

    def __init__(self, maxsize: int = 0) -> None:
        self._items: deque[bytes] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, body: bytes) -> None:
        while self._maxsize and len(self._items) >= self._maxsize:
            await self._writable.wait()
        self._items.append(body)
        self._changed()

    def put_dropping_head(self, body: bytes) -> bool:
        """Append without waiting; when full, drop the oldest first. True if one was dropped."""
        dropped = bool(self._maxsize) and len(self._items) >= self._maxsize
        if dropped:
            self._items.popleft()
        self._items.append(body)
        self._changed()
        return dropped

    def put_front(self, body: bytes) -> None:
        """Return a message taken with ``get``; its room was never given away, so no wait."""
        self._items.appendleft(body)
        self._changed()

    async def get(self) -> bytes:
        while not self._items:
            await self._readable.wait()
        body = self._items.popleft()
        self._changed()
        return body

    def take(self, most: int) -> list[bytes]:
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


class _Subscription(ABC):
    """One subscription's task: ``stop`` lets a handler that is running finish (within
    ``HANDLER_GRACE_S``), and cancels one that is only waiting for a body or for room."""

    def __init__(self, name: str, mailbox: _Mailbox) -> None:
        self.name = name
        self._mailbox = mailbox
        self._busy = False
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"herald-bus-consumer:{name}")

    @abstractmethod
    async def _run(self) -> None:
        """Take bodies from the mailbox and handle them until stopped."""

    def alive(self) -> bool:
        return not self._task.done()

    async def stop(self) -> None:
        self._stopping = True
        if not self._busy:
            self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=HANDLER_GRACE_S)
        if not done:
            log.warning("consumer %s: handler still running after %ss, cancelled", self.name, HANDLER_GRACE_S)
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class _Consumer(_Subscription):
    """One subscription: takes messages one at a time and settles each before the next."""

    def __init__(self, name: str, mailbox: _Mailbox, handler: Handler) -> None:
        self._handler = handler
        super().__init__(name, mailbox)

    async def _run(self) -> None:
        while not self._stopping:
            body = await self._mailbox.get()
            self._busy = True
            try:
                await self._deliver(body)
            finally:
                self._busy = False

    async def _deliver(self, body: bytes) -> None:
        try:
            await self._handler(body)
        except asyncio.CancelledError:
            self._mailbox.put_front(body)
            raise
        except Exception:
            log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
            try:
                await asyncio.sleep(REDELIVERY_PAUSE_S)
            finally:
                self._mailbox.put_front(body)


class _BatchConsumer(_Subscription):
    """A dispatch consumer: every queued body (up to ``HANDLE_AT_ONCE``) in one handler
    call, kept out of the queue until the work the handler started settles. Cancelled
    while waiting for room or a body, it still drains what is settling."""

    def __init__(self, name: str, mailbox: _Mailbox, handler: BatchHandler) -> None:
        self._handler = handler
        self._settler: Settler[bytes] = Settler(name, self._forget, self._put_back)
        super().__init__(name, mailbox)

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._settler.room()
                batch = [await self._mailbox.get(), *self._mailbox.take(HANDLE_AT_ONCE - 1)]
                self._busy = True
                try:
                    await self._start(batch)
                finally:
                    self._busy = False
        finally:
            await self._settler.drain()

    async def _start(self, batch: list[bytes]) -> None:
        try:
            settled = await self._handler(batch)
        except asyncio.CancelledError:
            await self._put_back(batch)
            raise
        except Exception:
            log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
            self._settler.pause()
            try:
                await asyncio.sleep(REDELIVERY_PAUSE_S)
            finally:
                await self._put_back(batch)
            return
        self._settler.add(batch, settled)

    async def _forget(self, batch: list[bytes]) -> None:
        """Settled: the bodies are done with (a broker's ack)."""

    async def _put_back(self, batch: list[bytes]) -> None:
        for body in reversed(batch):
            self._mailbox.put_front(body)


@dataclass(slots=True)
class _EventGroup:
    """One group's queue and the patterns bound to it."""

    mailbox: _Mailbox = field(default_factory=lambda: _Mailbox(EVENTS_QUEUE_MAX))
    patterns: set[str] = field(default_factory=set)

    def wants(self, routing_key: str) -> bool:
        return any(topic_matches(pattern, routing_key) for pattern in self.patterns)


class MemoryBus(Bus):
    def __init__(self) -> None:
        self._dispatch = _Mailbox()
        self._receipts = _Mailbox()
        self._nodes: dict[str, _Mailbox] = {}
        self._turns: dict[str, asyncio.Future[None]] = {}  # per node: the last publish's turn
        self._event_groups: dict[str, _EventGroup] = {}
        self._consumers: list[_Consumer | _BatchConsumer] = []
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        await self.stop_consuming()
        self._nodes.clear()
        self._closed = True

    async def ping(self) -> None:
        self._check_open()

    async def publish_dispatch(self, body: bytes) -> None:
        self._check_open()
        await self._dispatch.put(body)

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
            put = asyncio.ensure_future(self._put_after(before, self._nodes[node], body))
            # A callback, so the turn passes even when the put is cancelled before it ran.
            put.add_done_callback(partial(self._end_turn, node, mine))
            puts.append(put)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await asyncio.gather(*puts)
        except TimeoutError as exc:
            raise Unavailable("a node queue stayed full; its node is not keeping up") from exc

    @staticmethod
    async def _put_after(before: asyncio.Future[None] | None, mailbox: _Mailbox, body: bytes) -> None:
        if before is not None:
            await asyncio.wait({before})  # not cancelling it when this put gives up
        await mailbox.put(body)

    def _end_turn(self, node: str, mine: asyncio.Future[None], _: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._turns.get(node) is mine:
            del self._turns[node]

    async def publish_receipts(self, body: bytes) -> None:
        self._check_open()
        await self._receipts.put(body)

    async def consume_receipts(self, handler: Handler) -> None:
        self._check_open()
        self._consumers.append(_Consumer("receipts", self._receipts, handler))

    async def consume_dispatch(self, handler: BatchHandler) -> None:
        self._check_open()
        self._consumers.append(_BatchConsumer("dispatch", self._dispatch, handler))

    async def consume_node(self, node_id: str, handler: Handler) -> None:
        self._check_open()
        mailbox = self._nodes.setdefault(node_id, _Mailbox(NODE_QUEUE_MAX))
        self._consumers.append(_Consumer(f"node:{node_id}", mailbox, handler))

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        self._check_open()
        for name, group in self._event_groups.items():
            if group.wants(routing_key) and group.mailbox.put_dropping_head(body):
                log.warning("events queue %s is full (%s); dropped its oldest event", name, EVENTS_QUEUE_MAX)

    async def consume_events(self, group: str, patterns: Sequence[str], handler: Handler) -> None:
        self._check_open()
        declared = self._event_groups.setdefault(group, _EventGroup())
        declared.patterns.update(patterns)
        self._consumers.append(_Consumer(f"events:{group}", declared.mailbox, handler))

    async def stop_consuming(self) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.stop() for consumer in consumers))

    def consuming(self) -> bool:
        return bool(self._consumers) and all(consumer.alive() for consumer in self._consumers)

    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        depths = {"dispatch": len(self._dispatch), "receipts": len(self._receipts)}
        depths.update({f"node:{node}": len(self._nodes[node]) for node in node_ids if node in self._nodes})
        depths.update(
            {
                f"events:{group}": len(self._event_groups[group].mailbox)
                for group in event_groups
                if group in self._event_groups
            }
        )
        return depths

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the bus is closed")
