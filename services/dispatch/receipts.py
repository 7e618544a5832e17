"""dispatch's receipts worker: store what push nodes delivered and what clients acknowledged."""

from __future__ import annotations

import logging

from herald import receipts
from herald.store.base import Store

log = logging.getLogger("herald.receipts")


class ReceiptsWorker:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def handle(self, body: bytes) -> None:
        """Store a node's batch; a store failure raises, so the batch comes back later."""
        try:
            batch = receipts.decode(body)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("dropping an unreadable receipts body (%d bytes): %s", len(body), exc)
            return
        await self._store.record_deliveries(batch.deliveries)
        for ack in batch.acks:
            await self._store.record_ack(ack.app_id, ack.user_id, ack.conn_id, ack.positions, ack.at)
