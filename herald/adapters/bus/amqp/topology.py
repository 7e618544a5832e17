"""The AMQP bus's publishing side: its state, the topology declared on the publishing
channel (exchanges, work queues, dead letters, delay queues) and confirmed publishes.

``AmqpTopology`` holds what every part of the bus shares; dead_letters.py and bus.py add
their methods on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed, DeliveryError

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE, open_channel
from herald.adapters.bus.amqp.deliveries import ConsumeContext, FailureCounts
from herald.adapters.bus.amqp.depths import QueueDepths
from herald.adapters.bus.amqp.frames import Outgoing
from herald.adapters.bus.amqp.link import AmqpLink
from herald.adapters.bus.amqp.publishing import publish_all
from herald.adapters.bus.amqp.subscription import Subscription
from herald.adapters.bus.base import DELIVERY_LIMIT
from herald.core.errors import Unavailable
from herald.core.names import Names

log = logging.getLogger("herald.adapters.bus.amqp")

PUBLISH_TIMEOUT_S = 5.0
# Deliveries of a dead letter before the broker would drop it: listing is a delivery.
DEAD_DELIVERY_LIMIT = 1_000_000


@dataclass(slots=True)
class Topology:
    """The exchanges, as declared on the publishing channel of one connection."""

    channel: AbstractChannel
    generation: int
    dispatch_exchange: AbstractExchange
    nodes_exchange: AbstractExchange
    events_exchange: AbstractExchange
    dead_exchange: AbstractExchange
    delays: set[str] = field(default_factory=set)  # delay queues declared on this channel


class AmqpTopology(ABC):
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
        self._publisher: Topology | None = None
        self._reopening: asyncio.Lock | None = None
        self._subscriptions: list[Subscription] = []
        self._node_queues: list[str] = []
        self._context = ConsumeContext(self._link, prefetch, delivery_limit, self._park, FailureCounts())
        self._keep_as_is: set[str] = set()  # queues that exist with other arguments: used as they are
        self._closing: set[asyncio.Future[None]] = set()  # publishing channels given up, closing
        self._depths = QueueDepths()  # queue_depths' channel and the queues found missing
        self._started = False
        self._closed = False

    @property
    def quorum(self) -> bool:
        return self._queues.queue_type == "quorum"

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

    async def _declare(self, channel: AbstractChannel, generation: int) -> Topology:
        dispatch_exchange = await channel.declare_exchange(
            self._names.dispatch_exchange, ExchangeType.DIRECT, durable=True
        )
        nodes_exchange = await channel.declare_exchange(self._names.nodes_exchange, ExchangeType.DIRECT, durable=True)
        events_exchange = await channel.declare_exchange(self._names.events_exchange, ExchangeType.TOPIC, durable=True)
        dead_exchange = await self._declare_dead_letters(channel)
        for name in (self._queues.dispatch, self._queues.receipts):
            queue = await self._declare_work_queue(channel, name)
            await queue.bind(dispatch_exchange, routing_key=name)
        return Topology(channel, generation, dispatch_exchange, nodes_exchange, events_exchange, dead_exchange)

    def _topology_now(self) -> Topology | None:
        """The publishing channel if it is usable as it is, without suspending."""
        publisher = self._publisher
        if publisher is None or publisher.channel.is_closed or publisher.generation != self._link.generation:
            return None
        return publisher

    async def _reopen(self) -> Topology:
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

    async def _confirmed(self, exchange: AbstractExchange, messages: Sequence[Outgoing], *, mandatory: bool) -> None:
        """Publish ``messages`` and await their confirms together, within one bound."""
        await self._settled(publish_all(exchange, messages, mandatory=mandatory))

    async def _settled(self, publishing: Awaitable[Sequence[object]]) -> None:
        """Await publishes' confirms (or exceptions, in their place) within one bound."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                results = await publishing
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
            task = asyncio.ensure_future(close_channel(publisher.channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @abstractmethod
    async def _park(self, message: AbstractIncomingMessage, label: str, deliveries: int) -> None:
        """Publish a classic work queue's message over the limit to the dead letters, as a
        quorum queue would (dead_letters.py); the consumer acks it afterwards."""


async def close_channel(channel: AbstractChannel) -> None:
    with contextlib.suppress(*RETRYABLE, RuntimeError):
        await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)


def work_message(
    routing_key: str, body: bytes, *, message_id: str | None = None, expiration_s: float | None = None
) -> Outgoing:
    """A persistent message with an id: what ``herald dlq`` names it by if it is ever parked."""
    return Outgoing(
        routing_key,
        body,
        message_id=message_id or uuid.uuid4().hex,
        expiration_ms=None if expiration_s is None else int(expiration_s * 1000),
    )
