"""dispatch's receipts worker: store what push nodes delivered and what clients acknowledged.

A node's receipts batch holds a second's worth of acks, one per connection that acked.
Each is a store write and each acked position an event with a broker confirm, so they go
``AT_ONCE`` at a time rather than one round trip after another: a node with a thousand
acking connections would otherwise take seconds of waits per second of acks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.store.base import Store
from herald.core import receipts
from herald.messaging import events

log = logging.getLogger("herald.receipts")

# Store writes, then event publishes, in flight at once for one batch: enough to overlap
# the round trips, few enough to leave the store's connection pool to everyone else.
AT_ONCE = 16


class ReceiptsWorker:
    def __init__(self, store: Store, bus: Bus) -> None:
        self._store = store
        self._bus = bus

    async def handle(self, body: bytes) -> None:
        """Store a node's batch; a store failure raises, so the batch comes back later. An
        unreadable body raises too: the bus parks it after the delivery limit (``herald dlq``)."""
        try:
            batch = receipts.decode(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"an unreadable receipts body ({len(body)} bytes): {exc}") from exc
        await self._store.record_deliveries(batch.deliveries)
        await _at_once(
            [partial(self._store.record_ack, a.app_id, a.user_id, a.conn_id, a.positions, a.at) for a in batch.acks]
        )
        # After the store: an event never announces an ack that could still be lost. A
        # redelivered batch announces its acks again; receivers key on (conn, channel, offset).
        await _at_once(
            [
                partial(
                    events.publish,
                    self._bus,
                    events.event(
                        events.MESSAGE_ACKED,
                        ack.app_id,
                        user_id=ack.user_id,
                        conn_id=ack.conn_id,
                        channel=channel,
                        offset=offset,
                    ),
                )
                for ack in batch.acks
                for channel, offset in ack.positions.items()
            ]
        )


async def _at_once(calls: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Make ``calls`` with at most ``AT_ONCE`` in flight; the first failure is raised."""
    slots = asyncio.Semaphore(AT_ONCE)

    async def gated(call: Callable[[], Awaitable[Any]]) -> None:
        async with slots:
            await call()

    await asyncio.gather(*(gated(call) for call in calls))
