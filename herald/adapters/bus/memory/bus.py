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
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial

from herald.adapters.bus.base import (
    DELIVERY_LIMIT,
    BatchHandler,
    Bus,
    DeadLetter,
    Handler,
    OnChange,
    parked,
)
from herald.adapters.bus.memory.consumers import BatchConsumer, Consumer, Subscription
from herald.adapters.bus.memory.queues import EVENTS_QUEUE_MAX, EventGroup, Item, Mailbox, Parked, Queue
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.memory")

NODE_QUEUE_MAX = 10_000
PUBLISH_TIMEOUT_S = 5.0
# Retries waiting for their time, and dead letters kept, in this process.
RETRIES_MAX = 10_000
DEAD_MAX = 10_000


class MemoryBus(Bus):
    def __init__(self, delivery_limit: int = DELIVERY_LIMIT) -> None:
        self.delivery_limit = delivery_limit
        self._dispatch = Queue("dispatch", Mailbox(), work=True)
        self._receipts = Queue("receipts", Mailbox(), work=True)
        self._retries = Queue("retries", Mailbox(), work=True)
        self._nodes: dict[str, Mailbox] = {}
        self._turns: dict[str, asyncio.Future[None]] = {}  # per node: the last publish's turn
        self._event_groups: dict[str, EventGroup] = {}
        self._consumers: list[Subscription] = []
        self._waiting_retries: set[asyncio.TimerHandle] = set()
        self._dead: deque[Parked] = deque()
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

    def park(self, queue: str, item: Item) -> None:
        """Move a message that failed too often to the dead letters, logged and counted."""
        if len(self._dead) >= DEAD_MAX:
            dropped = self._dead.popleft()
            log.warning("%d dead letters kept in memory; dropped the oldest (%s)", DEAD_MAX, dropped.item.id)
        self._dead.append(Parked(queue, item, int(time.time() * 1000)))
        parked(queue, item.body, item.failures, message_id=item.id)

    # Publishing ----------------------------------------------------------------------
    async def publish_dispatch(self, body: bytes) -> None:
        self._check_open()
        await self._dispatch.mailbox.put(Item(body))

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
            put = asyncio.ensure_future(self._put_after(before, self._nodes[node], Item(body)))
            # A callback, so the turn passes even when the put is cancelled before it ran.
            put.add_done_callback(partial(self._end_turn, node, mine))
            puts.append(put)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await asyncio.gather(*puts)
        except TimeoutError as exc:
            raise Unavailable("a node queue stayed full; its node is not keeping up") from exc

    @staticmethod
    async def _put_after(before: asyncio.Future[None] | None, mailbox: Mailbox, item: Item) -> None:
        if before is not None:
            await asyncio.wait({before})  # not cancelling it when this put gives up
        await mailbox.put(item)

    def _end_turn(self, node: str, mine: asyncio.Future[None], _: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._turns.get(node) is mine:
            del self._turns[node]

    async def publish_receipts(self, body: bytes) -> None:
        self._check_open()
        await self._receipts.mailbox.put(Item(body))

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        self._check_open()
        for name, group in self._event_groups.items():
            if group.wants(routing_key) and group.mailbox.put_dropping_head(Item(body)):
                log.warning("events queue %s is full (%s); dropped its oldest event", name, EVENTS_QUEUE_MAX)

    async def publish_retry(self, body: bytes, delay_s: float) -> None:
        self._check_open()
        if len(self._waiting_retries) >= RETRIES_MAX:
            raise Unavailable(f"{RETRIES_MAX} retries already waiting in this process")
        item = Item(body)

        def due() -> None:
            self._waiting_retries.discard(timer)
            self._retries.mailbox.put_dropping_head(item)  # unbounded: appends, never drops

        timer = asyncio.get_running_loop().call_later(max(0.0, delay_s), due)
        self._waiting_retries.add(timer)

    # Consuming -----------------------------------------------------------------------
    async def consume_receipts(self, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(Consumer(self, self._receipts, handler, on_change))

    async def consume_dispatch(self, handler: BatchHandler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(BatchConsumer(self, self._dispatch, handler, on_change))

    async def consume_retries(self, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        self._consumers.append(Consumer(self, self._retries, handler, on_change))

    async def consume_node(self, node_id: str, handler: Handler, on_change: OnChange | None = None) -> None:
        self._check_open()
        mailbox = self._nodes.setdefault(node_id, Mailbox(NODE_QUEUE_MAX))
        self._consumers.append(Consumer(self, Queue(f"node:{node_id}", mailbox), handler, on_change))

    async def consume_events(
        self, group: str, patterns: Sequence[str], handler: Handler, on_change: OnChange | None = None
    ) -> None:
        self._check_open()
        declared = self._event_groups.setdefault(group, EventGroup())
        declared.patterns.update(patterns)
        self._consumers.append(Consumer(self, Queue(f"events:{group}", declared.mailbox), handler, on_change))

    async def stop_consuming(self) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.stop() for consumer in consumers))

    def consuming(self) -> bool:
        return bool(self._consumers) and all(consumer.alive() for consumer in self._consumers)

    # Operators -----------------------------------------------------------------------
    async def queue_depths(
        self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = (), *, shared: bool = True
    ) -> dict[str, int]:
        depths = (
            {
                "dispatch": len(self._dispatch.mailbox),
                "receipts": len(self._receipts.mailbox),
                "retries": len(self._retries.mailbox),
                "dead": len(self._dead),
            }
            if shared
            else {}
        )
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
            await queues[letter.queue].mailbox.put(Item(letter.item.body, id=letter.item.id))
        return len(chosen)

    async def drop_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        return len(self._take_dead(ids, limit))

    def _take_dead(self, ids: Sequence[str] | None, limit: int) -> list[Parked]:
        wanted = None if ids is None else set(ids)
        taken: list[Parked] = []
        kept: deque[Parked] = deque()
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
