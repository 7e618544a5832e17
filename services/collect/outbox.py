"""The outbox sweeper: publish what the store accepted but the bus never confirmed.

A message is in the store before its 202; if the broker was down, or the process died
between the store write and the confirm, it stays ``published: "pending"``. Every collect
replica sweeps such messages once they are ``MIN_AGE_S`` old (younger ones may still be
on their way) and publishes them again. Two replicas may both publish one: dispatch and
push drop duplicates by offset, so that costs a little work, never a duplicate frame.
"""

from __future__ import annotations

import logging
import time

from herald.adapters.store.base import Store
from herald.core.errors import Unavailable
from herald.core.model import now_ms
from herald.messaging.accept import Acceptor
from herald.ops import metrics
from herald.ops.periodic import Periodic

log = logging.getLogger("herald.outbox")

INTERVAL_S = 2.0
MIN_AGE_S = 5.0
PAGE = 500


class OutboxSweeper:
    def __init__(self, store: Store, acceptor: Acceptor, interval_s: float = INTERVAL_S) -> None:
        self._store = store
        self._acceptor = acceptor
        self._periodic = Periodic("outbox-sweeper", interval_s, self._sweep_or_skip)
        self.republished = 0

    async def sweep(self) -> int:
        """Publish every pending message old enough; returns how many were published."""
        published = left = 0
        cutoff = now_ms() - int(MIN_AGE_S * 1000)
        while True:
            pending = await self._store.unpublished(cutoff, PAGE, time.time())
            if pending and not await self._acceptor.publish(pending):
                left = len(pending)  # at least: the pages after it were not read
            if not pending or left:
                break
            published += len(pending)
            if len(pending) < PAGE:
                break
        if published:
            log.info("outbox published %d messages", published, extra={"count": published})
        self.republished += published
        metrics.outbox_republished.inc(published)
        metrics.outbox_pending.set(left)
        return published

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _sweep_or_skip(self) -> None:
        try:
            await self.sweep()
        except Unavailable as exc:
            log.warning("outbox sweep skipped: %s", exc.message)
