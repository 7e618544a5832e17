"""What the subscriptions of one bus share: the queue each consumes, the failure counts of
classic work queues, and the handling of one delivery (its key, its count, settling it)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelInvalidStateError

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE
from herald.adapters.bus.amqp.link import AmqpLink

log = logging.getLogger("herald.adapters.bus.amqp")

# Messages of classic work queues whose failures are remembered (oldest forgotten first).
FAILURES_KEPT = 10_000

Declare = Callable[[AbstractChannel], Awaitable[AbstractQueue]]
Park = Callable[[AbstractIncomingMessage, str, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """What one subscription consumes and how its failures are treated."""

    label: str  # for logs and metrics: dispatch, receipts, retries, node:<id>, events:<group>, legacy:<label>
    declare: Declare  # declares (and binds) the queue on a channel; run again at every re-subscription
    work: bool = False  # a work queue: failures counted, parked at the limit (see base)
    counted_by_broker: bool = False  # a quorum queue: the broker counts and dead-letters
    optional: bool = False  # may not exist (a queue of the other type being drained): then nothing to do


class FailureCounts:
    """Failed deliveries of classic work-queue messages, by message id, in this process.

    Classic queues do not count deliveries; this does, for the messages this process saw
    fail. Several competing consumers each count their own, so a poison message is parked
    after at most (consumers x limit) failures: bounded, which is what matters.
    """

    def __init__(self, kept: int = FAILURES_KEPT) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._kept = kept

    def add(self, key: str) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._kept:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)


def message_key(message: AbstractIncomingMessage) -> str:
    """The message's id, or a digest of its body for messages published without one."""
    return message.message_id or hashlib.sha1(message.body).hexdigest()[:16]


def delivery_count(message: AbstractIncomingMessage) -> int:
    """Failed deliveries a quorum queue counted for this message before this one."""
    value = (message.headers or {}).get("x-delivery-count")
    return int(value) if isinstance(value, int) else 0


@dataclass(frozen=True, slots=True)
class ConsumeContext:
    """What every subscription of one bus shares."""

    link: AmqpLink
    prefetch: int
    delivery_limit: int
    park: Park  # classic work queues: publish the message to the dead-letter exchange
    failures: FailureCounts


def stale(message: AbstractIncomingMessage) -> bool:
    """True when the message's channel is gone: the broker has already taken it back."""
    try:
        message.channel  # noqa: B018 - the property raises once the channel is closed
    except ChannelInvalidStateError:
        return True
    return False


async def settle(settling: Coroutine[Any, Any, None], queue: str, verb: str) -> None:
    try:
        await asyncio.wait_for(settling, OPERATION_TIMEOUT_S)
    except RETRYABLE as exc:
        # Unsettled messages go back to the queue when their channel closes.
        log.warning("consumer %s: could not %s a message (%r); the broker redelivers it", queue, verb, exc)
