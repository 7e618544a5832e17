"""What this node delivered and what its clients acknowledged, until the next flush.

Flushed onto the bus as one batch about once a second (``herald.receipts``). While the
bus refuses, deliveries are kept up to ``MAX_PENDING_DELIVERIES`` (the oldest go first:
they are status detail) and acks are merged, highest offset winning, so nothing grows
without bound and no acknowledged position is lost.
"""

from __future__ import annotations

import logging
import time

from herald.adapters.bus.base import Bus
from herald.core import receipts
from herald.core.errors import Unavailable
from herald.core.model import Delivery
from herald.core.receipts import AckReport, ReceiptBatch

log = logging.getLogger("herald.push")

MAX_PENDING_DELIVERIES = 100_000


class ReceiptBuffer:
    def __init__(self) -> None:
        self._acks: dict[tuple[str, str, str], dict[str, int]] = {}  # (app, user, conn) -> positions
        self._deliveries: list[Delivery] = []

    def delivered(self, delivery: Delivery) -> None:
        self._deliveries.append(delivery)

    def acked(self, app_id: str, user_id: str, conn_id: str, channel: str, offset: int) -> None:
        positions = self._acks.setdefault((app_id, user_id, conn_id), {})
        if offset > positions.get(channel, -1):
            positions[channel] = offset

    def pending_positions(self, app_id: str, user_id: str) -> dict[str, int]:
        """The user's acks not flushed yet, highest per channel across its connections."""
        merged: dict[str, int] = {}
        for (app, user, _), positions in self._acks.items():
            if (app, user) == (app_id, user_id):
                for channel, offset in positions.items():
                    merged[channel] = max(offset, merged.get(channel, 0))
        return merged

    async def flush(self, bus: Bus) -> None:
        now = time.time()
        acks = [AckReport(app, user, conn, positions, now) for (app, user, conn), positions in self._acks.items()]
        batch = ReceiptBatch(deliveries=self._deliveries, acks=acks)
        if not batch:
            return
        self._deliveries, self._acks = [], {}
        try:
            await bus.publish_receipts(receipts.encode(batch))
        except Unavailable as exc:
            log.warning("receipts kept for the next flush: %s", exc.message)
            self._deliveries = (batch.deliveries + self._deliveries)[-MAX_PENDING_DELIVERIES:]
            for ack in batch.acks:
                for channel, offset in ack.positions.items():
                    self.acked(ack.app_id, ack.user_id, ack.conn_id, channel, offset)
