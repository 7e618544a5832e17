"""What this node delivered and what its clients acknowledged, until the next flush.

Flushed onto the bus as one batch about once a second (``herald.receipts``), and the
deliveries alone in between (``services/push/node.py``, ``DELIVERIES_EVERY_S``). While the
bus refuses, deliveries are kept up to ``MAX_PENDING_DELIVERIES`` (the oldest go first:
they are status detail) and acks are merged, highest offset winning, for at most
``MAX_PENDING_ACK_CONNECTIONS`` connections (past it the oldest connection's acks go: its
client is sent those messages again on its next connection, which the protocol allows
after an abrupt end), so nothing grows without bound however long the bus is away.
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
MAX_PENDING_ACK_CONNECTIONS = 100_000


class ReceiptBuffer:
    def __init__(self) -> None:
        # (app, user, conn) -> positions: emptied by each flush; while the bus refuses, at
        # most MAX_PENDING_ACK_CONNECTIONS entries (the oldest dropped first).
        self._acks: dict[tuple[str, str, str], dict[str, int]] = {}
        # Emptied by each flush; while the bus refuses, the newest MAX_PENDING_DELIVERIES.
        self._deliveries: list[Delivery] = []
        self.dropped_acks = 0  # connections whose unflushed acks were dropped at the bound

    def delivered(self, delivery: Delivery) -> None:
        self._deliveries.append(delivery)

    def acked(self, app_id: str, user_id: str, conn_id: str, channel: str, offset: int) -> None:
        key = (app_id, user_id, conn_id)
        positions = self._acks.get(key)
        if positions is None:
            if len(self._acks) >= MAX_PENDING_ACK_CONNECTIONS:
                del self._acks[next(iter(self._acks))]
                self.dropped_acks += 1
            positions = self._acks[key] = {}
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

    async def flush(self, bus: Bus, acks: bool = True) -> None:
        """Publish what is held; ``acks=False`` sends the deliveries and keeps the acks merging."""
        now = time.time()
        held = self._acks if acks else {}
        reports = [AckReport(app, user, conn, positions, now) for (app, user, conn), positions in held.items()]
        batch = ReceiptBatch(deliveries=self._deliveries, acks=reports)
        if not batch:
            return
        self._deliveries = []
        if acks:
            self._acks = {}
        try:
            await bus.publish_receipts(receipts.encode(batch))
        except Unavailable as exc:
            log.warning("receipts kept for the next flush: %s", exc.message)
            self._deliveries = (batch.deliveries + self._deliveries)[-MAX_PENDING_DELIVERIES:]
            # The batch's acks go back in front of those made meanwhile: oldest first, for the bound.
            newer, self._acks = self._acks, {}
            for ack in batch.acks:
                for channel, offset in ack.positions.items():
                    self.acked(ack.app_id, ack.user_id, ack.conn_id, channel, offset)
            for (app_id, user_id, conn_id), positions in newer.items():
                for channel, offset in positions.items():
                    self.acked(app_id, user_id, conn_id, channel, offset)
            if self.dropped_acks:
                log.warning("acks of %d connections dropped while the bus was away (bound)", self.dropped_acks)

    def sizes(self) -> dict[str, int]:
        """Entries held: what the churn tests compare with a fresh node."""
        return {"pending_acks": len(self._acks), "pending_deliveries": len(self._deliveries)}
