"""The bus: queues between services. RabbitMQ for clusters, asyncio queues for standalone.

Four routes:
- the dispatch queue: durable, competing consumers (every dispatch worker), fed by
  collect with publisher confirms;
- the receipts queue: durable, competing consumers (dispatch workers again), fed by push
  nodes with what they delivered and what clients acknowledged;
- one queue per push node, fed by dispatch with the node id as routing key. A node's
  queue disappears some time after its node stops consuming; messages published to a
  node that has no queue are dropped (its users resume from the store on reconnect).

- the events topic exchange: notifications for webhooks and for anyone binding a queue
  (routing keys in ``herald.events``).

Node queues carry two kinds of body: message batches and control batches (join, leave,
kick; ``herald.codec``). Consumers get raw bodies and process them one at a time, in order (so a node writes a
channel's messages in the order dispatch routed them). A handler that returns has its
message acknowledged; one that raises has it rejected and redelivered after a short
pause. Publishes return only once the broker confirmed them and raise
``herald.errors.Unavailable`` when it cannot.

The dispatch queue's consumer takes batches instead (``BatchHandler``): one broker
message costs dispatch about as much CPU as routing many, so it takes every buffered
body in one call, routes them together, and keeps several batches' node publishes
awaiting their confirms while it reads the next (``Settler``).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

Handler = Callable[[bytes], Awaitable[None]]
# Takes bodies in delivery order, starts their work in that order and returns what is left
# of it as an awaitable; the bodies are acknowledged once that completes.
BatchHandler = Callable[[list[bytes]], Awaitable[Awaitable[None]]]

# How long a rejected message waits before it is offered again: a failing dependency
# (Redis down, say) must not turn a consumer into a busy loop.
REDELIVERY_PAUSE_S = 0.5
# Deliveries a consumer takes in one go (at most the prefetch are buffered anyway).
HANDLE_AT_ONCE = 64
# Batches whose work may be settling at once (dispatch: node publishes awaiting confirms).
# While that many are out, deliveries keep buffering, so the next batch is larger: the
# busier the consumer, the more messages share each round trip.
SETTLING_AT_ONCE = 16

log = logging.getLogger(__name__)

Delivery = TypeVar("Delivery")


class Bus(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Connect and declare the shared topology (exchanges, the dispatch queue)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consumers, then disconnect. Messages in a handler finish first (bounded)."""

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def publish_dispatch(self, body: bytes) -> None:
        """Queue ``body`` for dispatch; returns once the broker confirmed it."""

    @abstractmethod
    async def publish_receipts(self, body: bytes) -> None:
        """Queue a batch of receipts; returns once the broker confirmed it."""

    @abstractmethod
    async def consume_receipts(self, handler: Handler) -> None:
        """Start consuming the receipts queue (competing with other workers); returns at once."""

    @abstractmethod
    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        """Send each body to its node's queue, all confirms awaited together.

        Bodies reach a node in the order of the calls, even when a call starts before an
        earlier one's confirms arrived (calls started as tasks in order): dispatch keeps
        several batches' publishes in flight and a node must still get them in order.
        """

    @abstractmethod
    async def consume_dispatch(self, handler: BatchHandler) -> None:
        """Start consuming the dispatch queue (competing with other workers); returns at once.

        The handler gets every buffered body (up to ``HANDLE_AT_ONCE``) in delivery order;
        the calls are made one after another, so what a call starts is started before the
        next call begins. The bodies are acknowledged once the awaitable it returns
        completes; up to ``SETTLING_AT_ONCE`` batches may be completing at once. A handler
        that raises, or an awaitable that fails, has its bodies redelivered after a pause.
        """

    @abstractmethod
    async def consume_node(self, node_id: str, handler: Handler) -> None:
        """Declare this node's queue and start consuming it; returns at once."""

    @abstractmethod
    async def publish_event(self, routing_key: str, body: bytes) -> None:
        """Publish on the events topic exchange (keys: ``herald.events``); confirmed.

        Events are notifications (online, offline, joined, left, acked): an event with no
        bound queue is dropped, as a topic exchange does.
        """

    @abstractmethod
    async def consume_events(self, group: str, patterns: Sequence[str], handler: Handler) -> None:
        """Consume the events matching any of ``patterns`` (AMQP topic syntax: ``*`` one
        word, ``#`` any number) from the durable queue of ``group``: every consumer of a
        group competes for the same events, each group gets its own copy. Returns at once."""

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Cancel every consumer of this bus; in-flight handlers finish, nothing new starts."""

    @abstractmethod
    def consuming(self) -> bool:
        """True while every consumer started on this bus is still subscribed."""

    @abstractmethod
    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        """Messages waiting in the dispatch and receipts queues and in the given nodes' and
        event groups' queues, labelled ``dispatch``, ``receipts``, ``node:<id>`` and
        ``events:<group>``; a queue that does not exist is left out. For operators
        (``/metrics``, ``herald status``), never on a message's path."""


class Settler(Generic[Delivery]):
    """The batches a batch consumer started and has not settled yet.

    Each batch's remaining work runs as a task; when it completes the batch is
    acknowledged, when it fails the batch is requeued after ``REDELIVERY_PAUSE_S`` and the
    consumer starts nothing new during that pause. Batches settle in any order: one that
    fails may be redelivered after a later one was acknowledged, which readers already
    handle (push nodes order by offset and read a gap from the store).
    """

    def __init__(
        self,
        name: str,
        ack: Callable[[list[Delivery]], Awaitable[None]],
        requeue: Callable[[list[Delivery]], Awaitable[None]],
        at_once: int = SETTLING_AT_ONCE,
    ) -> None:
        self._name = name
        self._ack = ack
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
        # cancelled before its first step, so no batch is left neither acked nor requeued.
        work.add_done_callback(lambda done: self._settled(batch, done))

    async def drain(self) -> None:
        """Wait until every batch is acknowledged or requeued. Cancelled, it cancels the
        work still running, whose batches are then requeued, and waits for that."""
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
        log.error("consumer %s: a batch failed; redelivering in %ss", self._name, REDELIVERY_PAUSE_S, exc_info=failure)
        self.pause()
        try:
            await asyncio.sleep(REDELIVERY_PAUSE_S)
        finally:
            await self._requeue(batch)
