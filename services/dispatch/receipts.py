"""dispatch's receipts worker: store what push nodes delivered and what clients acknowledged."""

from __future__ import annotations

import logging

from herald import events, receipts
from herald.bus.base import Bus
from herald.store.base import Store

log = logging.getLogger("herald.receipts")


class ReceiptsWorker:
    def __init__(self, store: Store, bus: Bus) -> None:
        self._store = store
        self._bus = bus

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
        # After the store: an event never announces an ack that could still be lost. A
        # redelivered batch announces its acks again; receivers key on (conn, channel, offset).
        for ack in batch.acks:
            for channel, offset in ack.positions.items():
                value = events.event(
                    events.MESSAGE_ACKED,
                    ack.app_id,
                    user_id=ack.user_id,
                    conn_id=ack.conn_id,
                    channel=channel,
                    offset=offset,
                )
                await events.publish(self._bus, value)
