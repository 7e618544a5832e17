"""Subscriptions on RabbitMQ: each keeps itself subscribed and handles its deliveries.

A subscription owns a channel of its own (with the bus's prefetch), declares its queue on
it and consumes. It watches three ways of losing that: the broker cancelling the consumer
(``basic.cancel``: its queue was deleted), the channel closing, the connection dropping.
Any of them sets the subscription lost: ``on_change(False)``, the old channel released
(the broker gives its unacknowledged messages back), then the queue is declared and
consumed again on a fresh channel as soon as the link has a connection, with a bounded
backoff between failed attempts, and ``on_change(True)``. The worker task that handles
deliveries outlives the channels: deliveries of a channel that is gone are stale (the
broker already has them back) and are skipped, never acknowledged.

Each subscription buffers its deliveries (at most ``prefetch``: the broker sends no more)
and hands them to ``_handle``; the failure rules for work queues and for transient ones
are in ``herald.adapters.bus.base``. A classic work queue cannot count deliveries, so its
failures are counted here (``FailureCounts``) and a message over the limit is parked by
publishing it to the dead-letter exchange; a quorum queue counts them itself
(``x-delivery-count``) and dead-letters on its own.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE, close_quietly, open_channel
from herald.adapters.bus.amqp.deliveries import ConsumeContext, QueueSpec, delivery_count, message_key, settle, stale
from herald.adapters.bus.base import (
    HANDLE_AT_ONCE,
    REDELIVERY_PAUSE_S,
    RESUBSCRIBE_FIRST_S,
    RESUBSCRIBE_MAX_S,
    OnChange,
    parked,
)
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.amqp")

# How long stopping lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0


class Gone(Exception):
    """An optional queue (one being drained) does not exist any more."""


WAKE = object()  # put in an inbox to make an idle worker look at its held batches


class Subscription(ABC):
    """One consume call: a subscription that comes back, and the worker handling it."""

    def __init__(self, spec: QueueSpec, context: ConsumeContext, on_change: OnChange | None) -> None:
        self.spec = spec
        self._context = context
        self._on_change = on_change
        # Bounded by the channel's prefetch: the broker sends no more unacked messages.
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        # Deliveries to handle again before new ones: (batch, one by one?).
        self._held: deque[tuple[list[AbstractIncomingMessage], bool]] = deque()
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._lost = asyncio.Event()
        self._subscribed = False
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._rejecting: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.spec.label

    def alive(self) -> bool:
        """Subscribed right now, and the worker running."""
        return self._subscribed and self._worker is not None and not self._worker.done()

    async def start(self) -> bool:
        """Subscribe for the first time (``Unavailable`` if that fails); False for an
        optional queue that does not exist."""
        try:
            await self._subscribe()
        except Gone:
            return False
        self._subscribed = True
        self._worker = asyncio.create_task(self._run(), name=f"herald-bus-consumer:{self.name}")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"herald-bus-subscription:{self.name}")
        return True

    async def stop(self) -> None:
        """Cancel at the broker, let the handler in flight finish and settle, give the rest back."""
        self._stopping = True
        self._subscribed = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        channel, tag = self._channel, self._tag
        if channel is not None and tag is not None and not channel.is_closed:
            try:
                underlay = await channel.get_underlay_channel()
                await asyncio.wait_for(underlay.basic_cancel(tag), OPERATION_TIMEOUT_S)
            except RETRYABLE as exc:
                log.info("consumer %s: cancel not confirmed (%r); its channel is gone", self.name, exc)
        if self._worker is not None:
            self._inbox.put_nowait(None)  # wakes an idle worker
            done, _ = await asyncio.wait({self._worker}, timeout=HANDLER_GRACE_S)
            if not done:
                log.warning("consumer %s: handler still running after %ss, cancelled", self.name, HANDLER_GRACE_S)
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._rejecting):
            task.cancel()  # their messages are still unacknowledged: the channel's close returns them
        await asyncio.gather(*self._rejecting, return_exceptions=True)
        held = [message for batch, _ in self._held for message in batch]
        self._held.clear()
        await self._requeue([*held, *self._take_buffered()])
        await self._release()

    # Subscribing ---------------------------------------------------------------------
    async def _subscribe(self) -> None:
        # A queue found with other arguments closes the channel once; the declare then
        # takes it as it is (``AmqpBus._declare_queue``) on a fresh channel.
        for attempt in range(3):
            try:
                await self._subscribe_once()
                return
            except ChannelPreconditionFailed:
                if attempt == 2:
                    raise

    async def _subscribe_once(self) -> None:
        connection = self._context.link.current()
        lost = asyncio.Event()
        tag: list[str] = []

        def cancelled(frame: Any) -> None:
            if tag and getattr(frame, "consumer_tag", None) == tag[0]:
                log.error("consumer %s: cancelled by the broker", self.name)
                lost.set()

        channel: AbstractChannel | None = None
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                channel = await open_channel(connection)
                channel.close_callbacks.add(lambda *_: lost.set())
                await channel.set_qos(prefetch_count=self._context.prefetch)
                queue = await self.spec.declare(channel)
                underlay = await channel.get_underlay_channel()
                underlay.on_consumer_cancel_callbacks.add(cancelled)
                tag.append(await queue.consume(self._on_delivery))
        except ChannelNotFoundEntity as exc:
            await close_quietly(channel)
            if self.spec.optional:
                raise Gone(self.name) from exc
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        except RETRYABLE as exc:
            await close_quietly(channel)
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        except BaseException:
            await close_quietly(channel)
            raise
        self._channel, self._tag, self._lost = channel, tag[0], lost

    async def _supervise(self) -> None:
        while not self._stopping:
            await self._lost.wait()
            if self._stopping:
                return
            self._changed(False)
            log.warning("consumer %s: subscription lost; subscribing again", self.name)
            await self._release()
            delay = RESUBSCRIBE_FIRST_S
            while not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_S)
                await self._context.link.wait_connected()
                try:
                    await self._subscribe()
                except Gone:
                    log.info("consumer %s: its queue is gone; nothing left to drain", self.name)
                    return
                except Unavailable as exc:
                    log.info("consumer %s: not subscribed yet (%s)", self.name, exc.message)
                    continue
                except Exception:
                    # Say it loudly, and keep trying at the bounded pace: giving up would
                    # leave the queue unread with nobody noticing but /readyz.
                    log.exception("consumer %s: subscribing failed", self.name)
                    continue
                self._changed(True)
                log.warning("consumer %s: subscribed again", self.name)
                break

    def _changed(self, subscribed: bool) -> None:
        self._subscribed = subscribed
        if self._on_change is not None:
            try:
                self._on_change(subscribed)
            except Exception:
                log.exception("consumer %s: on_change(%s) failed", self.name, subscribed)

    async def _release(self) -> None:
        """Close the channel if it is still open (a broker cancel leaves it so): the
        broker takes back what was delivered on it and not settled."""
        channel, self._channel, self._tag = self._channel, None, None
        await close_quietly(channel)

    # Handling --------------------------------------------------------------------------
    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            await settle(message.nack(requeue=True), self.name, "requeue")
            return
        self._inbox.put_nowait(message)

    async def _run(self) -> None:
        while not self._stopping:
            await self._room()
            if self._held:
                batch, one_by_one = self._held.popleft()
                await self._handle(batch, one_by_one)
                continue
            first = await self._inbox.get()
            if first is None:
                break
            if first is WAKE:
                continue
            batch, stop = self._take_batch(first)
            await self._handle(batch, False)
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
            if more is not WAKE:
                batch.append(more)
        return [m for m in batch if not stale(m)], stop

    @abstractmethod
    async def _handle(self, batch: list[AbstractIncomingMessage], one_by_one: bool) -> None:
        """Handle a batch of deliveries and settle each (ack, hold, reject or requeue)."""

    def _hold(self, batch: list[AbstractIncomingMessage], one_by_one: bool, *, first: bool = True) -> None:
        """Keep deliveries to handle again (a dependency failed); the worker takes them before new ones."""
        if first:
            self._held.appendleft((batch, one_by_one))
        else:
            self._held.append((batch, one_by_one))
        self._inbox.put_nowait(WAKE)

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        """Acknowledge together: each ack waits for its frame's write, so acks awaited one
        after another went out one per loop pass, each in a system call of its own."""
        live = [message for message in messages if not stale(message)]
        if live:
            await settle(_all(message.ack() for message in live), self.name, "ack")

    def _take_buffered(self) -> list[AbstractIncomingMessage]:
        taken = []
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if message is not None and message is not WAKE:
                taken.append(message)
        return taken

    async def _requeue(self, messages: list[AbstractIncomingMessage]) -> None:
        # One by one, oldest first: a multiple-nack would also catch messages held elsewhere.
        for message in messages:
            if not stale(message):
                await settle(message.nack(requeue=True), self.name, "requeue")

    def _reject_later(self, message: AbstractIncomingMessage) -> None:
        """A work-queue message failed: after the pause it goes back to the queue counting
        one failure, or to the dead letters when that makes too many. Off the worker's
        path, so the messages behind it go on."""
        task = asyncio.create_task(self._reject(message), name=f"herald-bus-reject:{self.name}")
        self._rejecting.add(task)
        task.add_done_callback(self._rejecting.discard)

    async def _reject(self, message: AbstractIncomingMessage) -> None:
        await asyncio.sleep(REDELIVERY_PAUSE_S)
        if stale(message):
            return  # the broker took it back already (counting, on a quorum queue)
        limit = self._context.delivery_limit
        if self.spec.counted_by_broker:
            failures = delivery_count(message) + 1
            if failures > limit:
                parked(self.name, message.body, failures, message_id=message.message_id or "")
            await settle(message.nack(requeue=True), self.name, "reject")
            return
        key = message_key(message)
        failures = self._context.failures.add(key)
        if failures <= limit:
            await settle(message.nack(requeue=True), self.name, "reject")
            return
        try:
            await self._context.park(message, self.name, failures)
        except Unavailable as exc:
            log.warning("consumer %s: could not park a message (%s); it comes back", self.name, exc.message)
            await settle(message.nack(requeue=True), self.name, "reject")
            return
        self._context.failures.forget(key)
        parked(self.name, message.body, failures, message_id=message.message_id or "")
        await settle(message.ack(), self.name, "ack")


async def _all(acks: Iterable[Coroutine[Any, Any, None]]) -> None:
    await asyncio.gather(*acks)
