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
import contextlib
import hashlib
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)

from herald.adapters.bus.amqp_link import AmqpLink
from herald.adapters.bus.base import (
    HANDLE_AT_ONCE,
    REDELIVERY_PAUSE_S,
    RESUBSCRIBE_FIRST_S,
    RESUBSCRIBE_MAX_S,
    BatchHandler,
    Handler,
    OnChange,
    Settler,
    parked,
)
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.amqp")

# The faults worth retrying, and only those:
# - AMQPConnectionError: refused, lost or closed connection (ConnectionClosed and
#   the handshake failures are subclasses);
# - ChannelInvalidStateError: the channel closed under us;
# - ChannelNotFoundEntity: an exchange or queue vanished; declaring again brings it back;
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

OPERATION_TIMEOUT_S = 5.0
# How long stopping lets a handler in flight finish before cancelling it.
HANDLER_GRACE_S = 10.0
# Messages of classic work queues whose failures are remembered (oldest forgotten first).
FAILURES_KEPT = 10_000

Declare = Callable[[AbstractChannel], Awaitable[AbstractQueue]]
Park = Callable[[AbstractIncomingMessage, str, int], Awaitable[None]]


class _Gone(Exception):
    """An optional queue (one being drained) does not exist any more."""


_WAKE = object()  # put in an inbox to make an idle worker look at its held batches


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
        except _Gone:
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
            await _close_quietly(channel)
            if self.spec.optional:
                raise _Gone(self.name) from exc
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        except RETRYABLE as exc:
            await _close_quietly(channel)
            raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
        except BaseException:
            await _close_quietly(channel)
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
                except _Gone:
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
        await _close_quietly(channel)

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
            if first is _WAKE:
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
            if more is not _WAKE:
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
        self._inbox.put_nowait(_WAKE)

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        for message in messages:
            if not stale(message):
                await settle(message.ack(), self.name, "ack")

    def _take_buffered(self) -> list[AbstractIncomingMessage]:
        taken = []
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if message is not None and message is not _WAKE:
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


class Consumer(Subscription):
    """Handles its deliveries one at a time, in order."""

    def __init__(self, spec: QueueSpec, context: ConsumeContext, handler: Handler, on_change: OnChange | None) -> None:
        super().__init__(spec, context, on_change)
        self._handler = handler

    async def _handle(self, batch: list[AbstractIncomingMessage], one_by_one: bool) -> None:
        # Everything already buffered is handled before any of it is acknowledged: the
        # handlers run back to back in one turn of the event loop, so a push node that
        # fell behind writes each socket once for the lot (PushNode._flush).
        handled: list[AbstractIncomingMessage] = []
        for index, message in enumerate(batch):
            if stale(message):
                continue
            try:
                await self._handler(message.body)
            except asyncio.CancelledError:
                await self._ack(handled)
                await self._requeue(batch[index:])
                raise
            except Exception as exc:
                await self._ack(handled)
                handled = []
                if not self.spec.work:
                    log.exception("consumer %s: handler failed; redelivering in %ss", self.name, REDELIVERY_PAUSE_S)
                    await asyncio.sleep(REDELIVERY_PAUSE_S)
                    await self._requeue([*batch[index:], *self._take_buffered()])
                    return
                if isinstance(exc, Unavailable):
                    log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
                    self._hold(batch[index:], False)
                    await asyncio.sleep(REDELIVERY_PAUSE_S)
                    return
                log.exception("consumer %s: handler failed; the message comes back later", self.name)
                self._reject_later(message)
                continue
            handled.append(message)
        await self._ack(handled)


class BatchConsumer(Subscription):
    """Hands every buffered delivery to a batch handler in one call and acknowledges them
    once the work it started has settled, with several batches settling at once."""

    def __init__(
        self, spec: QueueSpec, context: ConsumeContext, handler: BatchHandler, on_change: OnChange | None
    ) -> None:
        super().__init__(spec, context, on_change)
        self._handler = handler
        self._settler: Settler[AbstractIncomingMessage] = Settler(self.name, self._ack, self._failed, self._requeue)

    async def _run(self) -> None:
        try:
            await super()._run()
        finally:
            await self._settler.drain()

    async def _room(self) -> None:
        # Room first, then take: what buffers while batches settle joins the next one.
        await self._settler.room()

    async def _failed(self, batch: list[AbstractIncomingMessage], failure: BaseException) -> None:
        # Unavailable: the same batch again; anything else: one by one, to find the culprit.
        self._hold(batch, not isinstance(failure, Unavailable), first=False)

    async def _handle(self, batch: list[AbstractIncomingMessage], one_by_one: bool) -> None:
        batch = [message for message in batch if not stale(message)]
        if not batch:
            return
        if one_by_one:
            await self._one_by_one(batch)
            return
        try:
            settled = await self._handler([message.body for message in batch])
        except asyncio.CancelledError:
            await self._requeue(batch)
            raise
        except Unavailable as exc:
            log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
            self._settler.pause()
            self._hold(batch, False)
            return
        except Exception:
            log.exception("consumer %s: handler failed; handling the batch one by one", self.name)
            self._settler.pause()
            self._hold(batch, True)
            return
        self._settler.add(batch, settled)

    async def _one_by_one(self, batch: list[AbstractIncomingMessage]) -> None:
        """Each body on its own, settled before the next: only the ones that fail again
        are rejected (counted), the others go through."""
        for index, message in enumerate(batch):
            if stale(message):
                continue
            try:
                await (await self._handler([message.body]))
            except asyncio.CancelledError:
                await self._requeue(batch[index:])
                raise
            except Unavailable as exc:
                log.warning("consumer %s: %s; trying again in %ss", self.name, exc.message, REDELIVERY_PAUSE_S)
                self._settler.pause()
                self._hold(batch[index:], True)
                return
            except Exception:
                log.exception("consumer %s: a message failed on its own; it comes back later", self.name)
                self._reject_later(message)
                continue
            await self._ack([message])


async def open_channel(connection: AbstractConnection, **options: Any) -> AbstractChannel:
    """A new channel; a connection that dropped a moment ago is ``Unavailable``, not a bug
    (aiormq raises RuntimeError for a closed connection)."""
    options.setdefault("publisher_confirms", False)
    try:
        return await connection.channel(**options)
    except RuntimeError as exc:
        raise Unavailable(f"RabbitMQ unavailable: {exc}") from exc


async def _close_quietly(channel: AbstractChannel | None) -> None:
    if channel is None or channel.is_closed:
        return
    with contextlib.suppress(*RETRYABLE, RuntimeError):
        await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)
