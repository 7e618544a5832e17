"""The bus on RabbitMQ (aio-pika), on one node or a cluster.

Topology (every name from ``herald.core.names.Names``; work queues by ``HERALD_QUEUE_TYPE``):

- ``dispatch_exchange`` (direct, durable) -> the dispatch and receipts work queues,
  each bound with its own name as routing key: collect's batches and push nodes' receipts,
  persistent, confirmed and ``mandatory`` so a missing queue is an error rather than a
  silent loss;
- the work queues are quorum queues by default (Raft-replicated on the cluster's nodes,
  so losing one node loses nothing) with ``x-delivery-limit`` and the dead-letter exchange
  (at-least-once dead-lettering); classic queues (``HERALD_QUEUE_TYPE=classic``) keep the
  names and arguments of earlier versions, and their failures are counted by the consumers
  (``amqp_consume.FailureCounts``);
- ``dead_letter_exchange`` (direct, durable) -> the dead-letter queue, bound once per work
  queue (routing key = the work queue's name, which is how a dead letter tells where it
  came from and where ``replay_dead`` sends it back);
- the retries lane: one delay queue per step of ``RETRY_DELAYS_S`` (TTL = the step, each
  message also expiring after its own delay) dead-lettering into the retries work queue
  through the default exchange; declared the first time they are used;
- ``nodes_exchange`` (direct, durable) -> ``node_queue(node)``, routing key = node id:
  not durable, not exclusive, with ``x-expires`` so the queue of a node that died goes
  away on its own; publishes to a node without a queue are dropped by the broker;
- ``events_exchange`` (topic, durable) -> ``events_queue(group)`` (durable, one per
  consumer group, bound once per pattern): notifications, persistent and confirmed; an
  event no queue is bound for is dropped by the broker. A group's queue keeps at most
  ``EVENTS_QUEUE_MAX`` events (oldest dropped first), so a group whose consumers are gone
  for good cannot fill the broker's disk with notifications nobody will read.

Node queues and events queues stay classic, whatever the queue type: a node queue lives
as long as its node and is rebuilt from the store when lost (its users resume), and an
events queue is a bounded stream of notifications (``x-max-length`` with drop-head, which
quorum queues only have since 3.12 and without ``x-expires``) whose loss costs a webhook
or a watcher an event, never a message. On a cluster an events queue lives on the node
that declared it first; while that node is down its group sees nothing (webhooks wait,
events published meanwhile are dropped).

Migration from classic to quorum queues: RabbitMQ refuses to re-declare a queue with other
arguments (PRECONDITION_FAILED), so quorum work queues have names of their own
(``herald.qq.dispatch``) and the classic ones keep theirs. A dispatch worker also drains
the work queues of the other type while they exist (``legacy:<label>`` in queue depths),
so processes of the earlier version may keep publishing there during a rolling upgrade;
once every process is upgraded and those queues are empty, the operator deletes them
(docs/OPERATIONS-HA.md). A work queue that exists with other arguments of the same type
(another ``HERALD_DELIVERY_LIMIT``, say) is used as it is, with a warning.

Connections: ``amqp_link.AmqpLink`` (one connection, to whichever listed node answers).
Publishing uses a channel with publisher confirms, reopened (and the topology declared
again) after a loss; each subscription has a channel of its own and comes back by itself
(``amqp_consume``).

Node publishes are written to the socket in the order they were called: each becomes a
task, tasks first run in creation order, and nothing before aiormq's channel lock
suspends while the channel is open. So publishes started without awaiting the previous
ones' confirms still reach a node's queue in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed, DeliveryError

from herald.adapters.bus.amqp_consume import (
    OPERATION_TIMEOUT_S,
    RETRYABLE,
    BatchConsumer,
    ConsumeContext,
    Consumer,
    FailureCounts,
    QueueSpec,
    Subscription,
    open_channel,
)
from herald.adapters.bus.amqp_link import AmqpLink
from herald.adapters.bus.base import (
    DELIVERY_LIMIT,
    BatchHandler,
    Bus,
    DeadLetter,
    Handler,
    OnChange,
    retry_step,
)
from herald.core.errors import Unavailable
from herald.core.names import Names

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 5.0
# Events one group's queue keeps before the broker drops the oldest (``x-max-length``,
# overflow ``drop-head``, RabbitMQ's default). The same bound as ``MemoryBus``.
EVENTS_QUEUE_MAX = 100_000
# Headers a parked (classic) message carries, read back by ``dead_letters``.
PARKED_REASON = "x-herald-reason"
PARKED_DELIVERIES = "x-herald-deliveries"
PARKED_AT = "x-herald-parked-at"
# Deliveries of a dead letter before the broker would drop it: listing is a delivery.
DEAD_DELIVERY_LIMIT = 1_000_000
# How long a legacy queue found missing is left out of queue depths before it is asked again.
LEGACY_ABSENT_S = 60.0
# How long another queue found missing is left out of ``queue_depths`` before it is asked again.
MISSING_RECHECK_S = 10.0
# Missing queues remembered at most (past it the expired are forgotten): node ids come and go.
MAX_ABSENT = 1024


@dataclass(slots=True)
class _Topology:
    """The exchanges, as declared on the publishing channel of one connection."""

    channel: AbstractChannel
    generation: int
    dispatch_exchange: AbstractExchange
    nodes_exchange: AbstractExchange
    events_exchange: AbstractExchange
    dead_exchange: AbstractExchange
    delays: set[str] = field(default_factory=set)  # delay queues declared on this channel


class AmqpBus(Bus):
    def __init__(
        self,
        url: str | Sequence[str],
        names: Names,
        prefetch: int = 64,
        node_queue_expires_s: float = 60.0,
        queue_type: str = "quorum",
        delivery_limit: int = DELIVERY_LIMIT,
    ) -> None:
        self._link = AmqpLink(url)
        self._names = names
        self._queues = names.work_queues(queue_type)
        self._other = names.work_queues("classic" if queue_type == "quorum" else "quorum")
        self._prefetch = prefetch
        self._node_queue_expires_ms = max(1, int(node_queue_expires_s * 1000))
        self._delivery_limit = delivery_limit
        self._publisher: _Topology | None = None
        self._reopening: asyncio.Lock | None = None
        self._subscriptions: list[Subscription] = []
        self._node_queues: list[str] = []
        self._context = ConsumeContext(self._link, prefetch, delivery_limit, self._park, FailureCounts())
        self._keep_as_is: set[str] = set()  # queues that exist with other arguments: used as they are
        self._closing: set[asyncio.Future[None]] = set()  # publishing channels given up, closing
        # Queues found missing, not asked again until; expired entries pruned past MAX_ABSENT.
        self._absent_until: dict[str, float] = {}
        # ``queue_depths`` keeps its channel open between calls (on the connection it was
        # opened on): with aio-pika 10.2 / aiormq 7.2 every channel opened and closed leaves
        # about 4.4 KB behind (``UnderlayChannel.create`` adds a callback to an observer of
        # ``connection.closing`` that its close never removes, holding the channel), and a
        # channel per call made dispatch (every 5 s) and each push node (every heartbeat)
        # grow for as long as they ran (issue 18). One channel, reopened only after a miss
        # or a lost connection: the leak is bounded by those.
        self._depths: tuple[AbstractChannel, AbstractConnection] | None = None
        self._depths_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    @property
    def quorum(self) -> bool:
        return self._queues.queue_type == "quorum"

    async def start(self) -> None:
        self._closed = False
        self._reopening = asyncio.Lock()
        try:
            await self._link.start(CONNECT_TIMEOUT_S)
            self._started = True
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._reopen()
        except BaseException as exc:
            # Half a start must not leave a connection behind.
            await self._link.close()
            self._started = False
            if isinstance(exc, RETRYABLE):
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            raise

    async def close(self) -> None:
        await self.stop_consuming()
        if self._publisher is not None and not self._publisher.channel.is_closed:
            for queue in self._node_queues:
                # This node is leaving: its clients reconnect elsewhere and resume from
                # the store, so what is left in its queue has no reader any more.
                try:
                    await asyncio.wait_for(self._publisher.channel.queue_delete(queue), OPERATION_TIMEOUT_S)
                except RETRYABLE as exc:
                    log.info("could not delete node queue %s (%r); x-expires will", queue, exc)
        self._node_queues.clear()
        if self._depths is not None:
            await _close_channel_quietly(self._depths[0])
            self._depths = None
        self._closed = True
        self._started = False
        self._publisher = None
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=OPERATION_TIMEOUT_S)
        await self._link.close()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                publisher = self._topology_now() or await self._reopen()
                # A passive declare is a real round trip: it proves the broker answers.
                channel = await publisher.channel.get_underlay_channel()
                await channel.exchange_declare(exchange=self._names.dispatch_exchange, passive=True)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc

    # Publishing ----------------------------------------------------------------------
    async def publish_dispatch(self, body: bytes) -> None:
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(
            [publisher.dispatch_exchange.publish(_work_message(body), self._queues.dispatch, mandatory=True)]
        )

    async def publish_receipts(self, body: bytes) -> None:
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(
            [publisher.dispatch_exchange.publish(_work_message(body), self._queues.receipts, mandatory=True)]
        )

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        if not bodies:
            return
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(
            [
                publisher.nodes_exchange.publish(
                    aio_pika.Message(body, delivery_mode=DeliveryMode.NOT_PERSISTENT),
                    node_id,
                    mandatory=False,
                )
                for node_id, body in bodies.items()
            ]
        )

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        publisher = self._topology_now() or await self._reopen()
        # Not mandatory: an event nobody bound a queue for is dropped, as the contract says.
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT)
        await self._confirmed([publisher.events_exchange.publish(message, routing_key, mandatory=False)])

    async def publish_retry(self, body: bytes, delay_s: float) -> None:
        publisher = self._topology_now() or await self._reopen()
        step = retry_step(delay_s)
        queue = self._queues.delay(int(step * 1000))
        if queue not in publisher.delays:
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    # The retries queue first: a delay expiring into a missing queue is lost.
                    await self._declare_work_queue(publisher.channel, self._queues.retries)
                    await self._declare_queue(publisher.channel, queue, self._delay_arguments(step))
            except (*RETRYABLE, ChannelPreconditionFailed) as exc:
                # A refused declare closed the channel; the next call declares afresh.
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            publisher.delays.add(queue)
        message = _work_message(body, expiration_s=min(max(delay_s, 0.001), step))
        await self._confirmed([publisher.channel.default_exchange.publish(message, queue, mandatory=True)])

    # Consuming -----------------------------------------------------------------------
    async def consume_dispatch(self, handler: BatchHandler, on_change: OnChange | None = None) -> None:
        spec = self._work_spec("dispatch", self._queues.dispatch)
        await self._start(BatchConsumer(spec, self._context, handler, on_change))
        legacy = self._legacy_spec("dispatch", self._other.dispatch)
        await self._start(BatchConsumer(legacy, self._context, handler, None), optional=True)

    async def consume_receipts(self, handler: Handler, on_change: OnChange | None = None) -> None:
        await self._start(
            Consumer(self._work_spec("receipts", self._queues.receipts), self._context, handler, on_change)
        )
        legacy = self._legacy_spec("receipts", self._other.receipts)
        await self._start(Consumer(legacy, self._context, handler, None), optional=True)

    async def consume_retries(self, handler: Handler, on_change: OnChange | None = None) -> None:
        await self._start(Consumer(self._work_spec("retries", self._queues.retries), self._context, handler, on_change))
        legacy = self._legacy_spec("retries", self._other.retries)
        await self._start(Consumer(legacy, self._context, handler, None), optional=True)

    async def consume_node(self, node_id: str, handler: Handler, on_change: OnChange | None = None) -> None:
        name = self._names.node_queue(node_id)

        async def declare(channel: AbstractChannel) -> AbstractQueue:
            exchange = await channel.declare_exchange(self._names.nodes_exchange, ExchangeType.DIRECT, durable=True)
            queue = await channel.declare_queue(
                name, durable=False, arguments={"x-expires": self._node_queue_expires_ms}
            )
            await queue.bind(exchange, routing_key=node_id)
            return queue

        await self._start(Consumer(QueueSpec(f"node:{node_id}", declare), self._context, handler, on_change))
        if name not in self._node_queues:
            self._node_queues.append(name)

    async def consume_events(
        self, group: str, patterns: Sequence[str], handler: Handler, on_change: OnChange | None = None
    ) -> None:
        async def declare(channel: AbstractChannel) -> AbstractQueue:
            exchange = await channel.declare_exchange(self._names.events_exchange, ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(
                self._names.events_queue(group), durable=True, arguments={"x-max-length": EVENTS_QUEUE_MAX}
            )
            for pattern in patterns:
                await queue.bind(exchange, routing_key=pattern)
            return queue

        await self._start(Consumer(QueueSpec(f"events:{group}", declare), self._context, handler, on_change))

    async def stop_consuming(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(subscription.stop() for subscription in subscriptions))

    def consuming(self) -> bool:
        counted = [s for s in self._subscriptions if not s.spec.optional]
        return bool(counted) and all(subscription.alive() for subscription in counted)

    async def _start(self, subscription: Subscription, optional: bool = False) -> None:
        if self._closed:
            raise Unavailable("the bus is closed")
        if not self._started:
            raise RuntimeError("AmqpBus used before start()")
        if await subscription.start():
            self._subscriptions.append(subscription)
            if optional:
                log.warning(
                    "draining %s, a work queue of the other queue type: delete it once it is empty and "
                    "every Herald process runs this version (docs/OPERATIONS-HA.md)",
                    subscription.name,
                )

    def _work_spec(self, label: str, name: str) -> QueueSpec:
        async def declare(channel: AbstractChannel) -> AbstractQueue:
            exchange = await channel.declare_exchange(self._names.dispatch_exchange, ExchangeType.DIRECT, durable=True)
            await self._declare_dead_letters(channel)
            queue = await self._declare_work_queue(channel, name)
            if label != "retries":  # retries arrive through the default exchange
                await queue.bind(exchange, routing_key=name)
            return queue

        return QueueSpec(label, declare, work=True, counted_by_broker=self.quorum)

    def _legacy_spec(self, label: str, name: str) -> QueueSpec:
        async def declare(channel: AbstractChannel) -> AbstractQueue:
            return await channel.declare_queue(name, passive=True)

        return QueueSpec(f"legacy:{label}", declare, work=True, counted_by_broker=not self.quorum, optional=True)

    # Declaring -----------------------------------------------------------------------
    def _work_arguments(self, name: str) -> dict[str, Any]:
        if not self.quorum:
            return {}  # exactly as earlier versions declared them, so they are still equivalent
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self._delivery_limit,
            "x-dead-letter-exchange": self._names.dead_letter_exchange,
            "x-dead-letter-routing-key": name,
            # Dead-lettering that waits for the dead-letter queue's confirm (RabbitMQ
            # 3.10+); it needs reject-publish, which changes nothing for unbounded queues.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def _delay_arguments(self, step_s: float) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-message-ttl": int(step_s * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._queues.retries,
        }
        if self.quorum:
            arguments.update(
                {"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
            )
        return arguments

    async def _declare_work_queue(self, channel: AbstractChannel, name: str) -> AbstractQueue:
        return await self._declare_queue(channel, name, self._work_arguments(name))

    async def _declare_queue(self, channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
        """Declare a durable queue; one that exists with other arguments is used as it is.

        A refused declare closes its channel, so the existing queue is only checked on a
        channel of its own; the caller's channel is then gone and ``ChannelInvalidStateError``
        (retryable) makes it start over on a new one, where ``_keep_as_is`` skips the declare.
        """
        if name in self._keep_as_is:
            return await channel.declare_queue(name, passive=True)
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed as exc:
            log.warning(
                "queue %s exists with other arguments than this process would give it (%s); using it as it is. "
                "To change them, drain and delete it or use a RabbitMQ policy (docs/OPERATIONS-HA.md)",
                name,
                exc,
            )
            self._keep_as_is.add(name)
            raise

    async def _declare_dead_letters(self, channel: AbstractChannel) -> AbstractExchange:
        exchange = await channel.declare_exchange(self._names.dead_letter_exchange, ExchangeType.DIRECT, durable=True)
        # RabbitMQ 4 gives quorum queues a delivery limit of 20 by default, and `herald dlq list`
        # hands every dead letter back once per listing: a limit no operator reaches.
        arguments = {"x-queue-type": "quorum", "x-delivery-limit": DEAD_DELIVERY_LIMIT} if self.quorum else {}
        queue = await self._declare_queue(channel, self._queues.dead, arguments)
        for name in self._queues.by_label.values():
            await queue.bind(exchange, routing_key=name)
        return exchange

    async def _declare(self, channel: AbstractChannel, generation: int) -> _Topology:
        dispatch_exchange = await channel.declare_exchange(
            self._names.dispatch_exchange, ExchangeType.DIRECT, durable=True
        )
        nodes_exchange = await channel.declare_exchange(self._names.nodes_exchange, ExchangeType.DIRECT, durable=True)
        events_exchange = await channel.declare_exchange(self._names.events_exchange, ExchangeType.TOPIC, durable=True)
        dead_exchange = await self._declare_dead_letters(channel)
        for name in (self._queues.dispatch, self._queues.receipts):
            queue = await self._declare_work_queue(channel, name)
            await queue.bind(dispatch_exchange, routing_key=name)
        return _Topology(channel, generation, dispatch_exchange, nodes_exchange, events_exchange, dead_exchange)

    def _topology_now(self) -> _Topology | None:
        """The publishing channel if it is usable as it is, without suspending."""
        publisher = self._publisher
        if publisher is None or publisher.channel.is_closed or publisher.generation != self._link.generation:
            return None
        return publisher

    async def _reopen(self) -> _Topology:
        """Open the publishing channel (again) and declare the topology on it."""
        if self._reopening is None or not self._started:
            if self._closed:
                raise Unavailable("the bus is closed")
            raise RuntimeError("AmqpBus used before start()")
        async with self._reopening:
            current = self._topology_now()
            if current is not None:
                return current
            connection = self._link.current()
            for attempt in range(3):
                channel = None
                try:
                    async with asyncio.timeout(OPERATION_TIMEOUT_S):
                        channel = await open_channel(connection, publisher_confirms=True, on_return_raises=True)
                        self._publisher = await self._declare(channel, self._link.generation)
                        return self._publisher
                except ChannelPreconditionFailed:
                    if attempt == 2:
                        raise
                except RETRYABLE as exc:
                    if channel is not None and not channel.is_closed:
                        with contextlib.suppress(*RETRYABLE, RuntimeError):
                            await channel.close()
                    raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            raise AssertionError("unreachable")

    # Dead letters --------------------------------------------------------------------
    async def _park(self, message: AbstractIncomingMessage, label: str, deliveries: int) -> None:
        """Classic work queues: publish a message over the limit to the dead-letter
        exchange ourselves, as a quorum queue would; the caller acks it afterwards."""
        source = label.removeprefix("legacy:")
        publisher = self._topology_now() or await self._reopen()
        parked = aio_pika.Message(
            message.body,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id or hashlib.sha1(message.body).hexdigest()[:16],
            headers={
                PARKED_REASON: "delivery_limit",
                PARKED_DELIVERIES: deliveries,
                PARKED_AT: int(time.time() * 1000),
            },
        )
        await self._confirmed([publisher.dead_exchange.publish(parked, self._queues.by_label[source], mandatory=True)])

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []

        async def look(_: AbstractChannel, message: AbstractIncomingMessage) -> None:
            letters.append(self._letter(message))

        await self._each_dead(limit, look)
        return letters

    async def replay_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        wanted = None if ids is None else set(ids)
        replayed = 0

        async def replay(_: AbstractChannel, message: AbstractIncomingMessage) -> None:
            nonlocal replayed
            letter = self._letter(message)
            if wanted is not None and letter.id not in wanted:
                return
            publisher = self._topology_now() or await self._reopen()
            again = _work_message(message.body, message_id=letter.id)
            target = self._queues.by_label.get(letter.queue, self._queues.dispatch)
            await self._confirmed([publisher.dispatch_exchange.publish(again, target, mandatory=True)])
            await asyncio.wait_for(message.ack(), OPERATION_TIMEOUT_S)
            replayed += 1

        await self._each_dead(limit, replay)
        return replayed

    async def drop_dead(self, ids: Sequence[str] | None = None, limit: int = 1000) -> int:
        wanted = None if ids is None else set(ids)
        dropped = 0

        async def drop(_: AbstractChannel, message: AbstractIncomingMessage) -> None:
            nonlocal dropped
            if wanted is not None and self._letter(message).id not in wanted:
                return
            await asyncio.wait_for(message.ack(), OPERATION_TIMEOUT_S)
            dropped += 1

        await self._each_dead(limit, drop)
        return dropped

    async def _each_dead(
        self, limit: int, visit: Callable[[AbstractChannel, AbstractIncomingMessage], Awaitable[None]]
    ) -> None:
        """Take up to ``limit`` dead letters without acknowledging them, visit each, then
        close the channel: whatever the visitor did not acknowledge goes back, in order."""
        channel = None
        try:
            channel = await asyncio.wait_for(
                self._link.current().channel(publisher_confirms=False), OPERATION_TIMEOUT_S
            )
            try:
                queue = await asyncio.wait_for(
                    channel.declare_queue(self._queues.dead, passive=True), OPERATION_TIMEOUT_S
                )
            except ChannelNotFoundEntity:
                return
            for _ in range(limit):
                message = await asyncio.wait_for(queue.get(no_ack=False, fail=False), OPERATION_TIMEOUT_S)
                if message is None:
                    break
                await visit(channel, message)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*RETRYABLE, RuntimeError):
                    await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)

    def _letter(self, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        deaths = headers.get("x-death")
        death: dict[str, Any] = deaths[0] if isinstance(deaths, list) and deaths else {}
        reason = str(headers.get(PARKED_REASON) or headers.get("x-first-death-reason") or death.get("reason") or "?")
        deliveries = headers.get(PARKED_DELIVERIES)
        if not isinstance(deliveries, int):
            # A quorum queue dead-letters on the delivery after the limit-th failure.
            deliveries = self._delivery_limit + 1 if reason == "delivery_limit" else 0
        at = headers.get(PARKED_AT)
        when = death.get("time")
        at_ms = at if isinstance(at, int) else int(when.timestamp() * 1000) if isinstance(when, datetime) else None
        source = message.routing_key or ""
        label = self._queues.label_of(source) or self._other.label_of(source) or source
        return DeadLetter(
            message.message_id or hashlib.sha1(message.body).hexdigest()[:16],
            label,
            reason,
            deliveries,
            at_ms,
            message.body,
        )

    # Operators -----------------------------------------------------------------------
    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        names = {
            "dispatch": self._queues.dispatch,
            "receipts": self._queues.receipts,
            "retries": self._queues.retries,
            "dead": self._queues.dead,
            **{f"legacy:{label}": name for label, name in self._other.by_label.items()},
            **{f"node:{node}": self._names.node_queue(node) for node in node_ids},
            **{f"events:{group}": self._names.events_queue(group) for group in event_groups},
        }
        depths: dict[str, int] = {}
        async with self._depths_lock:
            now = time.monotonic()
            connection = None
            channel = None
            try:
                connection = self._link.current()
                channel = self._depths_channel(connection)
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    for label, name in names.items():
                        if self._absent_until.get(name, 0.0) > now:
                            continue
                        # A passive declare of a missing queue closes its channel: it is
                        # reopened after each miss.
                        if channel is None or channel.is_closed:
                            channel = await open_channel(connection)
                        try:
                            queue = await channel.declare_queue(name, passive=True)
                        except ChannelNotFoundEntity:
                            # Not asked again for a while: each miss costs a channel. A legacy
                            # queue is gone for good once deleted; another may be declared soon
                            # (the retries queue by its first consumer).
                            legacy = label.startswith("legacy:")
                            self._absent_until[name] = now + (LEGACY_ABSENT_S if legacy else MISSING_RECHECK_S)
                            continue
                        depths[label] = queue.declaration_result.message_count or 0
            except RETRYABLE as exc:
                await _close_channel_quietly(channel)
                channel = None
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            finally:
                self._depths = (channel, connection) if channel is not None and not channel.is_closed else None
                if len(self._absent_until) > MAX_ABSENT:
                    self._absent_until = {q: until for q, until in self._absent_until.items() if until > now}
        return depths

    def _depths_channel(self, connection: AbstractConnection) -> AbstractChannel | None:
        """The channel the last ``queue_depths`` left open, if it is still usable."""
        if self._depths is None:
            return None
        channel, on = self._depths
        if on is connection and not channel.is_closed:
            return channel
        self._depths = None
        return None

    async def _confirmed(self, publishes: list[Awaitable[object]]) -> None:
        """Await every publish's confirm together, within one bound."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                results = await asyncio.gather(*publishes, return_exceptions=True)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ did not confirm in {PUBLISH_TIMEOUT_S}s") from exc
        for result in results:
            if isinstance(result, DeliveryError):
                self._drop_publisher()
            if isinstance(result, RETRYABLE):
                raise Unavailable(f"RabbitMQ did not take a publish: {result!r}") from result
            if isinstance(result, BaseException):
                raise result

    def _drop_publisher(self) -> None:
        """Publish on a new channel from now on. A nack or a return says the channel's view
        of a queue is wrong: after a quorum queue changed leaders, RabbitMQ 3.10 was seen
        nacking every publish of a channel that first published while the old leader was
        still on record, for as long as the channel lived; a fresh channel asks again
        (and declares the topology again, which also brings back a deleted queue)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None and not publisher.channel.is_closed:
            task = asyncio.ensure_future(_close_channel(publisher.channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


async def _close_channel(channel: AbstractChannel) -> None:
    with contextlib.suppress(*RETRYABLE, RuntimeError):
        await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)


def _work_message(body: bytes, *, message_id: str | None = None, expiration_s: float | None = None) -> aio_pika.Message:
    """A persistent message with an id: what ``herald dlq`` names it by if it is ever parked."""
    return aio_pika.Message(
        body,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message_id or uuid.uuid4().hex,
        expiration=expiration_s,
    )


async def _close_channel_quietly(channel: AbstractChannel | None) -> None:
    if channel is not None and not channel.is_closed:
        with contextlib.suppress(*RETRYABLE, RuntimeError):
            await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)
