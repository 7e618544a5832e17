"""The bus on RabbitMQ (aio-pika, robust connection).

Topology (every name from ``herald.names.Names``):

- ``dispatch_exchange`` (direct, durable) -> ``dispatch_queue`` (durable): collect's
  batches, persistent, published with ``mandatory`` so a missing queue is an error
  rather than a silent loss;
- ``dispatch_exchange`` -> ``receipts_queue`` (durable), routing key = its name: push
  nodes' deliveries and acks, persistent and confirmed like collect's batches;
- ``nodes_exchange`` (direct, durable) -> ``node_queue(node)``, routing key = node id:
  not durable, not exclusive, with ``x-expires`` so the queue of a node that died goes
  away on its own; publishes to a node without a queue are dropped by the broker;
- ``events_exchange`` (topic, durable) -> ``events_queue(group)`` (durable, one per
  consumer group, bound once per pattern): notifications, persistent and confirmed; an
  event no queue is bound for is dropped by the broker. A group's queue keeps at most
  ``EVENTS_QUEUE_MAX`` events (oldest dropped first), so a group whose consumers are gone
  for good cannot fill the broker's disk with notifications nobody will read.

Two channels: one with publisher confirms for publishing, one with a bounded prefetch
for consuming, so a slow consumer never delays a confirm. Both declare the topology, and
the robust connection re-declares it (and the consumers) after a reconnect.

Each consumer buffers its deliveries (at most ``prefetch``, the broker sends no more)
and handles them one at a time in delivery order. When a handler raises, the failed
message and everything buffered behind it are requeued in order, so RabbitMQ puts them
back where they were and the order survives a redelivery; only a delivery that was
already on the wire at that moment can overtake them. The dispatch queue's consumer
hands everything buffered to its handler in one call and acknowledges a batch once the
work the handler started has settled, several batches at once (``herald.bus.base.Settler``).

Node publishes are written to the socket in the order they were called: each becomes a
task, tasks first run in creation order, and nothing before aiormq's channel lock
suspends while the connection is up. So publishes started without awaiting the previous
ones' confirms still reach a node's queue in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
)

from herald.adapters.bus.base import HANDLE_AT_ONCE, REDELIVERY_PAUSE_S, BatchHandler, Bus, Handler, Settler
from herald.core.errors import Unavailable
from herald.core.names import Names

log = logging.getLogger(__name__)

# The faults worth retrying, and only those:
# - AMQPConnectionError: refused, lost or closed connection (ConnectionClosed and
#   the handshake failures are subclasses);
# - ChannelInvalidStateError: the channel closed under us, or is being restored;
# - ChannelNotFoundEntity: an exchange or queue vanished; the robust channel
#   re-declares the topology when it reopens;
# - DeliveryError: the broker nacked a publish, or returned it as unroutable
#   (PublishError, a subclass);
# - ConnectionError: socket-level failures aio-pika lets through;
# - TimeoutError (= asyncio.TimeoutError): no answer within our bound.
# A precondition failure (a queue declared with other arguments) or an access refusal is
# a deployment mistake, not an outage, and surfaces as itself.
RETRYABLE: tuple[type[BaseException], ...] = (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    ConnectionError,
    TimeoutError,
)

CONNECT_TIMEOUT_S = 10.0
OPERATION_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 5.0
# How long stopping lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0
# Events one group's queue keeps before the broker drops the oldest (``x-max-length``,
# overflow ``drop-head``, RabbitMQ's default). The same bound as ``MemoryBus``.
EVENTS_QUEUE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class _Topology:
    """The shared exchanges and the dispatch queue, as declared on one channel."""

    channel: AbstractRobustChannel
    dispatch_exchange: AbstractRobustExchange
    nodes_exchange: AbstractRobustExchange
    events_exchange: AbstractRobustExchange
    dispatch_queue: AbstractRobustQueue
    receipts_queue: AbstractRobustQueue


def _stale(message: AbstractIncomingMessage) -> bool:
    """True when the message's channel is gone: the broker has already requeued it."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel is closed
    except ChannelInvalidStateError:
        return True
    return False


async def _settle(settling: Coroutine[Any, Any, None], queue: str, verb: str) -> None:
    try:
        await asyncio.wait_for(settling, OPERATION_TIMEOUT_S)
    except RETRYABLE as exc:
        # Unsettled messages go back to the queue when their channel closes.
        log.warning("consumer %s: could not %s a message (%r); the broker redelivers it", queue, verb, exc)


class _Subscription(ABC):
    """One subscription: buffers its deliveries and hands them to ``_handle`` in batches."""

    def __init__(self, queue: AbstractRobustQueue) -> None:
        self._queue = queue
        # Bounded by the channel's prefetch: the broker sends no more unacked messages.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._tag: str | None = None
        self._stopping = False
        self._cancelled_by_broker = False
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._queue.name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"herald-bus-consumer:{self.name}")
        try:
            self._tag = await self._queue.consume(self._on_delivery, timeout=OPERATION_TIMEOUT_S)
            underlay = await self._queue.channel.get_underlay_channel()
        except BaseException:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            raise
        # The broker can cancel a consumer on its own (its queue deleted, say) while the
        # channel stays open: nothing would arrive again and nothing else would tell.
        underlay.on_consumer_cancel_callbacks.add(self._on_broker_cancel)

    async def _on_broker_cancel(self, frame: Any) -> None:
        if getattr(frame, "consumer_tag", None) == self._tag:
            log.error("consumer %s: cancelled by the broker", self.name)
            self._cancelled_by_broker = True

    def alive(self) -> bool:
        return (
            self._task is not None
            and not self._task.done()
            and not self._cancelled_by_broker
            and not self._queue.channel.is_closed
        )

    async def stop(self) -> None:
        """Cancel at the broker, let the handler in flight finish and settle, requeue the rest."""
        self._stopping = True
        if self._tag is not None:
            tag, self._tag = self._tag, None
            try:
                await asyncio.wait_for(self._queue.cancel(tag), OPERATION_TIMEOUT_S)
            except RETRYABLE as exc:
                log.info("consumer %s: cancel not confirmed (%r); its channel is gone", self.name, exc)
        if self._task is None:
            return
        self._inbox.put_nowait(None)  # wakes an idle worker
        done, _ = await asyncio.wait({self._task}, timeout=HANDLER_GRACE_S)
        if not done:
            log.warning("consumer %s: handler still running after %ss, cancelled", self.name, HANDLER_GRACE_S)
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._requeue(self._take_buffered())

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            await _settle(message.nack(requeue=True), self.name, "requeue")
            return
        self._inbox.put_nowait(message)

    async def _run(self) -> None:
        while not self._stopping:
            await self._room()
            message = await self._inbox.get()
            if message is None:
                break
            batch, stop = self._take_batch(message)
            await self._handle(batch)
            if stop:
                break

    async def _room(self) -> None:
        """Wait until another batch may be taken: at once, unless batches stay in flight."""
        return None

    def _take_batch(self, first: AbstractIncomingMessage) -> tuple[list[AbstractIncomingMessage], bool]:
        """``first`` and what is buffered behind it, without stale ones; True when stopping."""
        batch, stop = [first], False
        while len(batch) < HANDLE_AT_ONCE and not self._inbox.empty():
            more = self._inbox.get_nowait()
            if more is None:
                stop = True
                break
            batch.append(more)
        return [m for m in batch if not _stale(m)], stop

    @abstractmethod
    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        """Handle a batch of deliveries and settle each (ack or requeue)."""

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        for message in messages:
            await _settle(message.ack(), self.name, "ack")

    def _take_buffered(self) -> list[AbstractIncomingMessage]:
        taken = []
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if message is not None:
                taken.append(message)
        return taken

    async def _requeue(self, messages: list[AbstractIncomingMessage]) -> None:
        # One by one, oldest first: a multiple-nack would also catch another consumer's
        # unacked messages on the same channel.
        for message in messages:
            if not _stale(message):
                await _settle(message.nack(requeue=True), self.name, "requeue")


class _Consumer(_Subscription):
    """Handles its deliveries one at a time, in order."""

    def __init__(self, queue: AbstractRobustQueue, handler: Handler) -> None:
        super().__init__(queue)
        self._handler = handler

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        # Everything already buffered is handled before any of it is acknowledged: the
        # handlers run back to back in one turn of the event loop, so a push node that
        # fell behind writes each socket once for the lot (PushNode._flush).
        handled: list[AbstractIncomingMessage] = []
        for index, message in enumerate(batch):
            try:
                await self._handler(message.body)
            except asyncio.CancelledError:
                await self._ack(handled)
                await self._requeue(batch[index:])
                raise
            except Exception:
                log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
                await self._ack(handled)
                await asyncio.sleep(REDELIVERY_PAUSE_S)
                await self._requeue([*batch[index:], *self._take_buffered()])
                return
            handled.append(message)
        await self._ack(handled)


class _BatchConsumer(_Subscription):
    """Hands every buffered delivery to a batch handler in one call and acknowledges them
    once the work it started has settled, with several batches settling at once."""

    def __init__(self, queue: AbstractRobustQueue, handler: BatchHandler) -> None:
        super().__init__(queue)
        self._handler = handler
        self._settler: Settler[AbstractIncomingMessage] = Settler(self.name, self._ack, self._requeue)

    async def _run(self) -> None:
        try:
            await super()._run()
        finally:
            await self._settler.drain()

    async def _room(self) -> None:
        # Room first, then take: what buffers while batches settle joins the next one.
        await self._settler.room()

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        if not batch:
            return
        try:
            settled = await self._handler([message.body for message in batch])
        except asyncio.CancelledError:
            await self._requeue(batch)
            raise
        except Exception:
            log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
            self._settler.pause()
            await asyncio.sleep(REDELIVERY_PAUSE_S)
            await self._requeue([*batch, *self._take_buffered()])
            return
        self._settler.add(batch, settled)


class AmqpBus(Bus):
    def __init__(
        self,
        url: str,
        names: Names,
        prefetch: int = 64,
        node_queue_expires_s: float = 60.0,
    ) -> None:
        self._url = url
        self._names = names
        self._prefetch = prefetch
        self._node_queue_expires_ms = max(1, int(node_queue_expires_s * 1000))
        self._connection: AbstractRobustConnection | None = None
        self._publisher: _Topology | None = None
        self._subscriber: _Topology | None = None
        self._consumers: list[_Subscription] = []
        self._node_queues: list[str] = []
        self._closed = False

    @property
    def _dispatch_routing_key(self) -> str:
        return self._names.dispatch_queue

    async def start(self) -> None:
        self._closed = False
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._connection = await aio_pika.connect_robust(self._url, timeout=CONNECT_TIMEOUT_S)
                publish_channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                self._publisher = await self._declare(publish_channel)
                consume_channel = await self._connection.channel(publisher_confirms=False)
                await consume_channel.set_qos(prefetch_count=self._prefetch)
                self._subscriber = await self._declare(consume_channel)
        except BaseException as exc:
            # Half a start (say, a queue declared with other arguments) must not leave a
            # connection reconnecting in the background.
            await self._disconnect()
            if isinstance(exc, RETRYABLE):
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            raise

    async def close(self) -> None:
        await self.stop_consuming()
        if self._publisher is not None:
            for queue in self._node_queues:
                # This node is leaving: its clients reconnect elsewhere and resume from
                # the store, so what is left in its queue has no reader any more.
                try:
                    await asyncio.wait_for(self._publisher.channel.queue_delete(queue), OPERATION_TIMEOUT_S)
                except RETRYABLE as exc:
                    log.info("could not delete node queue %s (%r); x-expires will", queue, exc)
        self._node_queues.clear()
        self._closed = True
        await self._disconnect()

    async def ping(self) -> None:
        publisher = self._require(self._publisher)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                # A passive declare is a real round trip: it proves the broker answers.
                channel = await publisher.channel.get_underlay_channel()
                await channel.exchange_declare(exchange=self._names.dispatch_exchange, passive=True)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc

    async def publish_dispatch(self, body: bytes) -> None:
        publisher = self._require(self._publisher)
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT)
        await self._confirmed(
            [publisher.dispatch_exchange.publish(message, self._dispatch_routing_key, mandatory=True)]
        )

    async def publish_receipts(self, body: bytes) -> None:
        publisher = self._require(self._publisher)
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT)
        await self._confirmed(
            [publisher.dispatch_exchange.publish(message, self._names.receipts_queue, mandatory=True)]
        )

    async def consume_receipts(self, handler: Handler) -> None:
        subscriber = self._require(self._subscriber)
        await self._subscribe(subscriber.receipts_queue, handler)

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        if not bodies:
            return
        publisher = self._require(self._publisher)
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

    async def consume_dispatch(self, handler: BatchHandler) -> None:
        subscriber = self._require(self._subscriber)
        await self._start(_BatchConsumer(subscriber.dispatch_queue, handler))

    async def consume_node(self, node_id: str, handler: Handler) -> None:
        subscriber = self._require(self._subscriber)
        name = self._names.node_queue(node_id)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                queue = await subscriber.channel.declare_queue(
                    name,
                    durable=False,
                    arguments={"x-expires": self._node_queue_expires_ms},
                )
                await queue.bind(subscriber.nodes_exchange, routing_key=node_id)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        if name not in self._node_queues:
            self._node_queues.append(name)
        await self._subscribe(queue, handler)

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        publisher = self._require(self._publisher)
        # Not mandatory: an event nobody bound a queue for is dropped, as the contract says.
        message = aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT)
        await self._confirmed([publisher.events_exchange.publish(message, routing_key, mandatory=False)])

    async def consume_events(self, group: str, patterns: Sequence[str], handler: Handler) -> None:
        subscriber = self._require(self._subscriber)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                queue = await subscriber.channel.declare_queue(
                    self._names.events_queue(group),
                    durable=True,
                    arguments={"x-max-length": EVENTS_QUEUE_MAX},
                )
                for pattern in patterns:
                    # The robust queue records its bindings and replays them after a reconnect.
                    await queue.bind(subscriber.events_exchange, routing_key=pattern)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        await self._subscribe(queue, handler)

    async def stop_consuming(self) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.stop() for consumer in consumers))

    def consuming(self) -> bool:
        return bool(self._consumers) and all(consumer.alive() for consumer in self._consumers)

    async def queue_depths(self, node_ids: Sequence[str] = (), event_groups: Sequence[str] = ()) -> dict[str, int]:
        if self._connection is None:
            raise Unavailable("the bus is not connected")
        names = {
            "dispatch": self._names.dispatch_queue,
            "receipts": self._names.receipts_queue,
            **{f"node:{node}": self._names.node_queue(node) for node in node_ids},
            **{f"events:{group}": self._names.events_queue(group) for group in event_groups},
        }
        depths: dict[str, int] = {}
        channel = None
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                for label, name in names.items():
                    # A passive declare of a missing queue closes its channel, so these run on
                    # a channel of their own, reopened after each miss.
                    if channel is None or channel.is_closed:
                        channel = await self._connection.channel(publisher_confirms=False)
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelNotFoundEntity:
                        continue
                    depths[label] = queue.declaration_result.message_count or 0
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*RETRYABLE):
                    await channel.close()
        return depths

    async def _declare(self, channel: AbstractRobustChannel) -> _Topology:
        dispatch_exchange = await channel.declare_exchange(
            self._names.dispatch_exchange, ExchangeType.DIRECT, durable=True
        )
        nodes_exchange = await channel.declare_exchange(self._names.nodes_exchange, ExchangeType.DIRECT, durable=True)
        events_exchange = await channel.declare_exchange(self._names.events_exchange, ExchangeType.TOPIC, durable=True)
        dispatch_queue = await channel.declare_queue(self._names.dispatch_queue, durable=True)
        await dispatch_queue.bind(dispatch_exchange, routing_key=self._dispatch_routing_key)
        receipts_queue = await channel.declare_queue(self._names.receipts_queue, durable=True)
        await receipts_queue.bind(dispatch_exchange, routing_key=self._names.receipts_queue)
        return _Topology(channel, dispatch_exchange, nodes_exchange, events_exchange, dispatch_queue, receipts_queue)

    async def _subscribe(self, queue: AbstractRobustQueue, handler: Handler) -> None:
        await self._start(_Consumer(queue, handler))

    async def _start(self, consumer: _Subscription) -> None:
        try:
            await consumer.start()
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        self._consumers.append(consumer)

    async def _confirmed(self, publishes: list[Awaitable[object]]) -> None:
        """Await every publish's confirm together, within one bound."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                results = await asyncio.gather(*publishes, return_exceptions=True)
        except RETRYABLE as exc:
            raise Unavailable(f"RabbitMQ did not confirm in {PUBLISH_TIMEOUT_S}s") from exc
        for result in results:
            if isinstance(result, RETRYABLE):
                raise Unavailable(f"RabbitMQ did not take a publish: {result!r}") from result
            if isinstance(result, BaseException):
                raise result

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        self._publisher = self._subscriber = None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), OPERATION_TIMEOUT_S)
            except RETRYABLE as exc:
                log.info("RabbitMQ connection did not close cleanly (%r)", exc)

    def _require(self, topology: _Topology | None) -> _Topology:
        if topology is None:
            if self._closed:
                # A request racing a shutdown: the caller's usual retry path applies.
                raise Unavailable("the bus is closed")
            raise RuntimeError("AmqpBus used before start()")
        return topology
