"""The two kinds of subscription: one delivery at a time (``Consumer``: node, events, receipts
and retries queues), or every buffered delivery in one batch handler call whose work settles
later (``BatchConsumer``: dispatch)."""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from herald.adapters.bus.amqp.deliveries import ConsumeContext, QueueSpec, stale
from herald.adapters.bus.amqp.subscription import Subscription
from herald.adapters.bus.base import (
    REDELIVERY_PAUSE_S,
    BatchHandler,
    Handler,
    OnChange,
    Settler,
)
from herald.core.errors import Unavailable

log = logging.getLogger("herald.adapters.bus.amqp")


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
