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
  (``deliveries.FailureCounts``);
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

Connections: ``link.AmqpLink`` (one connection, to whichever listed node answers).
Publishing uses a channel with publisher confirms, reopened (and the topology declared
again) after a loss; each subscription has a channel of its own and comes back by itself
(subscription.py, consumers.py).

Node publishes are written to the socket in the order they were called: each becomes a
task, tasks first run in creation order, and nothing before aiormq's channel lock
suspends while the channel is open. So publishes started without awaiting the previous
ones' confirms still reach a node's queue in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE
from herald.adapters.bus.amqp.consumers import BatchConsumer, Consumer
from herald.adapters.bus.amqp.dead_letters import AmqpDeadLetters
from herald.adapters.bus.amqp.deliveries import QueueSpec
from herald.adapters.bus.amqp.frames import Outgoing
from herald.adapters.bus.amqp.subscription import Subscription
from herald.adapters.bus.amqp.topology import work_message
from herald.adapters.bus.base import BatchHandler, Bus, Handler, OnChange, retry_step
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.amqp")

# A refused declare (a queue that exists with other arguments) closes the channel like an outage.
DECLARE_FAULTS: tuple[type[BaseException], ...] = (*RETRYABLE, ChannelPreconditionFailed)

CONNECT_TIMEOUT_S = 10.0
# Events one group's queue keeps before the broker drops the oldest (``x-max-length``,
# overflow ``drop-head``, RabbitMQ's default). The same bound as ``MemoryBus``.
EVENTS_QUEUE_MAX = 100_000


class AmqpBus(AmqpDeadLetters, Bus):
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
        await self._depths.close()
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

    async def publish_dispatch(self, body: bytes) -> None:
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(publisher.dispatch_exchange, [work_message(self._queues.dispatch, body)], mandatory=True)

    async def publish_receipts(self, body: bytes) -> None:
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(publisher.dispatch_exchange, [work_message(self._queues.receipts, body)], mandatory=True)

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        if not bodies:
            return
        publisher = self._topology_now() or await self._reopen()
        await self._confirmed(
            publisher.nodes_exchange,
            [Outgoing(node_id, body, persistent=False) for node_id, body in bodies.items()],
            mandatory=False,
        )

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        await self.publish_events([(routing_key, body)])

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        if not events:
            return
        publisher = self._topology_now() or await self._reopen()
        exchange = publisher.events_exchange
        # Not mandatory: an event nobody bound a queue for is dropped, as the contract says.
        await self._confirmed(exchange, [Outgoing(key, body) for key, body in events], mandatory=False)

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
            except DECLARE_FAULTS as exc:
                # A refused declare closed the channel; the next call declares afresh.
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            publisher.delays.add(queue)
        message = work_message(queue, body, expiration_s=min(max(delay_s, 0.001), step))
        await self._confirmed(publisher.channel.default_exchange, [message], mandatory=True)

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

    async def queue_depths(
        self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = (), *, shared: bool = True
    ) -> dict[str, int]:
        shared_names = {
            "dispatch": self._queues.dispatch,
            "receipts": self._queues.receipts,
            "retries": self._queues.retries,
            "dead": self._queues.dead,
            **{f"legacy:{label}": name for label, name in self._other.by_label.items()},
        }
        names = {
            **(shared_names if shared else {}),
            **{f"node:{node}": self._names.node_queue(node) for node in node_ids},
            **{f"events:{group}": self._names.events_queue(group) for group in event_groups},
        }
        return await self._depths.read(self._link.current(), names)
