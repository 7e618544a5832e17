"""The bus: queues between services. RabbitMQ for clusters, asyncio queues for standalone.

Routes:
- the dispatch queue: durable, competing consumers (every dispatch worker), fed by
  collect with publisher confirms;
- the receipts queue: durable, competing consumers (dispatch workers again), fed by push
  nodes with what they delivered and what clients acknowledged;
- the retries lane: webhook retries wait out their delay in the broker
  (``publish_retry``) and then reach the competing consumers of ``consume_retries``, so a
  retry outlives the process that scheduled it;
- one queue per push node, fed by dispatch with the node id as routing key. A node's
  queue disappears some time after its node stops consuming; messages published to a
  node that has no queue are dropped (its users resume from the store on reconnect);
- the events topic exchange: notifications for webhooks and for anyone binding a queue
  (routing keys in ``herald.events``).

Node queues carry two kinds of body: message batches and control batches (join, leave,
kick; ``herald.codec``). Consumers get raw bodies and process them one at a time, in order
(so a node writes a channel's messages in the order dispatch routed them). A handler that
returns has its message acknowledged. Publishes return only once the broker confirmed them
and raise ``herald.errors.Unavailable`` when it cannot.

The dispatch queue's consumer takes batches instead (``BatchHandler``): one broker
message costs dispatch about as much CPU as routing many, so it takes every buffered
body in one call, routes them together, and keeps several batches' node publishes
awaiting their confirms while it reads the next (``Settler``).

Failures. The work queues (dispatch, receipts, retries) tell two kinds apart:
- ``Unavailable`` (a dependency is down): the consumer keeps the message and tries it
  again after ``REDELIVERY_PAUSE_S``, as long as it takes. Nothing is counted: an outage
  of Redis must not use up a message's deliveries;
- any other exception (a bug, a body nobody can handle): the message goes back to the
  queue after the pause and counts one failed delivery. A batch that fails this way is
  split and its bodies handled one by one, so only the culprit is counted and the ones
  beside it go through. After ``delivery_limit`` failed deliveries the message is
  dead-lettered: parked in the dead-letter queue, logged with its message ids, counted
  in ``/metrics`` (``herald_dead_lettered``), listed and re-driven by ``herald dlq``
  (``dead_letters``, ``replay_dead``, ``drop_dead``). A poison message is never retried
  forever, and never blocks the messages behind it.
Node and events queues are transient by design and keep the simple rule: a handler that
raises has its message (and everything buffered behind it, to keep the order) redelivered
after the pause.

Subscriptions recover by themselves: when the broker cancels a consumer (its queue was
deleted), its channel closes or the connection drops and comes back, the bus subscribes
again (re-declaring the queue) with a bounded backoff, calls the subscription's
``on_change(False)`` when it is lost and ``on_change(True)`` once it is back, and
``consuming()`` says whether every subscription is live right now.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from herald.core.dead_letters import describe
from herald.core.errors import Unavailable
from herald.ops import metrics

Handler = Callable[[bytes], Awaitable[None]]
# Takes bodies in delivery order, starts their work in that order and returns what is left
# of it as an awaitable; the bodies are acknowledged once that completes.
BatchHandler = Callable[[list[bytes]], Awaitable[Awaitable[None]]]
# Told False when a subscription is lost and True once it is back.
OnChange = Callable[[bool], None]

# How long a failed message waits before it is tried again: a failing dependency (Redis
# down, say) must not turn a consumer into a busy loop.
REDELIVERY_PAUSE_S = 0.5
# Deliveries a consumer takes in one go (at most the prefetch are buffered anyway).
HANDLE_AT_ONCE = 64
# Batches whose work may be settling at once (dispatch: node publishes awaiting confirms).
# While that many are out, deliveries keep buffering, so the next batch is larger: the
# busier the consumer, the more messages share each round trip.
SETTLING_AT_ONCE = 16
# Failed deliveries of a work-queue message before it is dead-lettered (RabbitMQ 4's own
# default for quorum queues). A restart or a lost connection may count one too (the
# broker cannot tell it from a failure), so the limit leaves room for a few of those.
DELIVERY_LIMIT = 20
# The delays a webhook retry can wait, each a queue of its own on RabbitMQ (a queue's
# messages expire in order, so one queue per delay keeps every expiry on time). A delay
# between two steps waits in the longer step's queue with its own, shorter, expiry.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# Re-subscribing after a loss: doubling from the first wait to the last, then steady.
RESUBSCRIBE_FIRST_S = 0.1
RESUBSCRIBE_MAX_S = 5.0

log = logging.getLogger(__name__)

Delivery = TypeVar("Delivery")


def retry_step(delay_s: float) -> float:
    """The retry queue a delay waits in: the shortest step at least as long (else the longest)."""
    index = bisect.bisect_left(RETRY_DELAYS_S, delay_s)
    return RETRY_DELAYS_S[min(index, len(RETRY_DELAYS_S) - 1)]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A parked message, as ``herald dlq`` shows it."""

    id: str  # the bus message's id, stable while it is parked: what replay and drop take
    queue: str  # where it came from: dispatch, receipts or retries
    reason: str  # delivery_limit (failed too often), rejected, expired ...
    deliveries: int  # how many times it was delivered before it was parked, when known
    at_ms: int | None  # when it was parked
    body: bytes

    @property
    def about(self) -> str:
        return describe(self.queue, self.body)


def parked(queue: str, body: bytes, deliveries: int, *, message_id: str = "") -> None:
    """Log and count a message this process saw dead-lettered: the operator's trail."""
    metrics.dead_lettered.labels(queue=queue).inc()
    log.error(
        "dead-lettered a %s message after %d failed deliveries: %s (`herald dlq list` shows it)",
        queue,
        deliveries,
        describe(queue, body),
        extra={"bus_message_id": message_id} if message_id else None,
    )


class Bus(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect and declare the shared topology (exchanges, the work queues)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers, then disconnect. Messages in a handler finish first (bounded)."""

    @abstractmethod
    async def ping(self) -> None:
        """A round trip to the broker; raises Unavailable when it does not answer (readiness)."""

    @abstractmethod
    async def publish_dispatch(self, body: bytes) -> None:
        """Queue ``body`` for dispatch; returns once the broker confirmed it."""

    @abstractmethod
    async def publish_receipts(self, body: bytes) -> None:
        """Queue a batch of receipts; returns once the broker confirmed it."""

    @abstractmethod
    async def consume_receipts(self, handler: Handler, on_change: OnChange | None = None) -> None:
        """Start consuming the receipts queue (competing with other workers); returns at once."""

    @abstractmethod
    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        """Send each body to its node's queue, all confirms awaited together.

        Bodies reach a node in the order of the calls, even when a call starts before an
        earlier one's confirms arrived (calls started as tasks in order): dispatch keeps
        several batches' publishes in flight and a node must still get them in order.
        """

    @abstractmethod
    async def consume_dispatch(self, handler: BatchHandler, on_change: OnChange | None = None) -> None:
        """Start consuming the dispatch queue (competing with other workers); returns at once.

        The handler gets every buffered body (up to ``HANDLE_AT_ONCE``) in delivery order;
        the calls are made one after another, so what a call starts is started before the
        next call begins. The bodies are acknowledged once the awaitable it returns
        completes; up to ``SETTLING_AT_ONCE`` batches may be completing at once. What
        happens when a call or its awaitable fails is in the module docstring.
        """

    @abstractmethod
    async def consume_node(self, node_id: str, handler: Handler, on_change: OnChange | None = None) -> None:
        """Declare this node's queue and start consuming it; returns at once.

        Raises ``Unavailable`` when the first subscription cannot be made. Once made, the
        bus keeps it (see the module docstring) and reports to ``on_change``. Calling
        ``stop_consuming`` and then ``consume_node`` again starts afresh, never twice.
        """

    @abstractmethod
    async def publish_event(self, routing_key: str, body: bytes) -> None:
        """Publish on the events topic exchange (keys: ``herald.events``); confirmed.

        Events are notifications (online, offline, joined, left, acked): an event with no
        bound queue is dropped, as a topic exchange does.
        """

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish several events, each its own message under its own routing key, with
        their confirms awaited together (a connect storm's ``user.online`` events)."""
        for routing_key, body in events:
            await self.publish_event(routing_key, body)

    @abstractmethod
    async def consume_events(
        self, group: str, patterns: Sequence[str], handler: Handler, on_change: OnChange | None = None
    ) -> None:
        """Consume the events matching any of ``patterns`` (AMQP topic syntax: ``*`` one
        word, ``#`` any number) from the durable queue of ``group``: every consumer of a
        group competes for the same events, each group gets its own copy. Returns at once."""

    @abstractmethod
    async def publish_retry(self, body: bytes, delay_s: float) -> None:
        """Hand ``body`` to a ``consume_retries`` consumer after about ``delay_s`` (at least
        that, at most the next step of ``RETRY_DELAYS_S``); returns once it is kept."""

    @abstractmethod
    async def consume_retries(self, handler: Handler, on_change: OnChange | None = None) -> None:
        """Start consuming the retries that are due (competing with other workers)."""

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Cancel every consumer of this bus; in-flight handlers finish, nothing new starts."""

    @abstractmethod
    def consuming(self) -> bool:
        """True while every consumer started on this bus is subscribed right now."""

    @abstractmethod
    async def queue_depths(
        self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = (), *, shared: bool = True
    ) -> dict[str, int]:
        """Messages waiting in the dispatch, receipts, retries and dead-letter queues (unless
        ``shared`` is False) and in the given nodes' and event groups' queues, labelled
        ``dispatch``, ``receipts``, ``retries``, ``dead``, ``node:<id>`` and
        ``events:<group>`` (and ``legacy:<label>`` for queues of the other queue type still
        being drained); a queue that does not exist is left out. For operators
        (``/metrics``, ``herald status``), never on a message's path."""

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The parked messages, oldest first (at most ``limit``); they stay parked."""

    @abstractmethod
    async def replay_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        """Send parked messages back to the queue they came from, as new messages (their
        failure count starts again): the ones in ``ids``, or all (at most ``limit``)."""

    @abstractmethod
    async def drop_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        """Delete parked messages for good: the ones in ``ids``, or all (at most ``limit``)."""


class Settler(Generic[Delivery]):
    """The batches a batch consumer started and has not settled yet.

    Each batch's remaining work runs as a task; when it completes the batch is
    acknowledged, when it fails the consumer is told (``failed``, after
    ``REDELIVERY_PAUSE_S`` during which it starts nothing new), and when it is cancelled
    (stopping) the batch is given back to the queue. Batches settle in any order: one that
    fails may be handled again after a later one was acknowledged, which readers already
    handle (push nodes order by offset and read a gap from the store).
    """

    def __init__(
        self,
        name: str,
        ack: Callable[[list[Delivery]], Awaitable[None]],
        failed: Callable[[list[Delivery], BaseException], Awaitable[None]],
        requeue: Callable[[list[Delivery]], Awaitable[None]],
        at_once: int = SETTLING_AT_ONCE,
    ) -> None:
        self._name = name
        self._ack = ack
        self._failed = failed
        self._requeue = requeue
        self._at_once = at_once
        self._settling: set[asyncio.Future[None]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0

    async def room(self) -> None:
        """Wait until another batch may start: no failure pause running, a free slot."""
        loop = asyncio.get_running_loop()
        while True:
            delay = self._paused_until - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif len(self._settling) >= self._at_once:
                await asyncio.wait(set(self._settling), return_when=asyncio.FIRST_COMPLETED)
            else:
                return

    def pause(self) -> None:
        """Start nothing new for ``REDELIVERY_PAUSE_S``: a dependency just failed."""
        self._paused_until = asyncio.get_running_loop().time() + REDELIVERY_PAUSE_S

    def add(self, batch: list[Delivery], settled: Awaitable[None]) -> None:
        work = asyncio.ensure_future(settled)
        self._settling.add(work)
        # A callback rather than a wrapping coroutine: it runs even when the work is
        # cancelled before its first step, so no batch is left neither acked nor given back.
        work.add_done_callback(lambda done: self._settled(batch, done))

    async def drain(self) -> None:
        """Wait until every batch is acknowledged or given back. Cancelled, it cancels the
        work still running, whose batches are then given back, and waits for that."""
        try:
            while self._settling or self._finishing:
                await asyncio.wait({*self._settling, *self._finishing})
        except asyncio.CancelledError:
            for work in list(self._settling):
                work.cancel()
            while self._settling or self._finishing:
                await asyncio.wait({*self._settling, *self._finishing})
            raise

    def _settled(self, batch: list[Delivery], work: asyncio.Future[None]) -> None:
        self._settling.discard(work)
        finishing = asyncio.ensure_future(self._finish(batch, work))
        self._finishing.add(finishing)
        finishing.add_done_callback(self._finishing.discard)

    async def _finish(self, batch: list[Delivery], work: asyncio.Future[None]) -> None:
        if work.cancelled():
            await self._requeue(batch)
            return
        failure = work.exception()
        if failure is None:
            await self._ack(batch)
            return
        if isinstance(failure, Unavailable):
            log.warning("consumer %s: a batch failed (%s); again in %ss", self._name, failure, REDELIVERY_PAUSE_S)
        else:
            log.error("consumer %s: a batch failed; again in %ss", self._name, REDELIVERY_PAUSE_S, exc_info=failure)
        self.pause()
        await self._failed(batch, failure)
