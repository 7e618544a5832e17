"""Dead letters on RabbitMQ: parking a classic queue's message over the limit, and what
``herald dlq`` does with them (list, replay, drop)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE
from herald.adapters.bus.amqp.publishing import publish
from herald.adapters.bus.amqp.topology import AmqpTopology, work_message
from herald.adapters.bus.base import DeadLetter
from herald.core.errors import Unavailable

# Headers a parked (classic) message carries, read back by ``dead_letters``.
PARKED_REASON = "x-herald-reason"
PARKED_DELIVERIES = "x-herald-deliveries"
PARKED_AT = "x-herald-parked-at"


class AmqpDeadLetters(AmqpTopology):
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
        await self._settled(
            asyncio.gather(
                publish(publisher.dead_exchange, parked, self._queues.by_label[source], mandatory=True),
                return_exceptions=True,
            )
        )

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
            target = self._queues.by_label.get(letter.queue, self._queues.dispatch)
            again = work_message(target, message.body, message_id=letter.id)
            await self._confirmed(publisher.dispatch_exchange, [again], mandatory=True)
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
        first = deaths[0] if isinstance(deaths, list) and deaths else None
        death: dict[str, Any] = first if isinstance(first, dict) else {}
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
