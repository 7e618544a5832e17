"""Recording routed messages as ``dispatched``, off the path of the messages.

Nobody waits for this status but operators and ``GET /v1/messages/{id}``, so routing does
not wait for the store either: ``record`` queues ids and returns, and one writer writes
them. At most one write is in flight; ids queued meanwhile go together in the next write
(a group commit), and an idle writer first lingers ``LINGER_S`` so batches that come a
few milliseconds apart share a write too. The busier dispatch is and the slower the
store, the fewer and larger the writes, instead of one round trip per batch.

Measured before this (the write awaited before acknowledging each batch): a store write
that stalled for a few hundred milliseconds held every unacknowledged input, and with
the prefetch's worth waiting the dispatch queue backed up and delivery with it.

Bounds and failures: past ``PENDING_MAX`` queued ids ``record`` waits for the writer
(a store that cannot keep up slows dispatch's acks instead of growing memory). A store
outage is logged and those ids are not retried (delivery and acks move the status past
``dispatched`` anyway). ``flush`` at shutdown writes what is queued; a killed dispatch
loses the statuses of at most the last write's worth of messages, never a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from herald.adapters.store.base import Store
from herald.core.errors import Unavailable

log = logging.getLogger("herald.dispatch")

# Ids per store write: one update's filter stays far below a 16 MiB document.
WRITE_AT_MOST = 5_000
# How long an idle writer collects ids before writing. Only the status waits for it, and
# it is what makes writes shared when dispatch keeps up (one message per batch): at 150
# messages/s about three per write, each write a store round trip saved on both sides.
LINGER_S = 0.02
# Ids queued before ``record`` waits for the writer.
PENDING_MAX = 50_000


class StatusRecorder:
    def __init__(
        self,
        store: Store,
        status: str = "dispatched",
        linger_s: float = LINGER_S,
        pending_max: int = PENDING_MAX,
    ) -> None:
        self._store = store
        self._status = status
        self._linger_s = linger_s
        self._pending_max = pending_max
        # Emptied by each write; ``record`` waits while it holds PENDING_MAX ids.
        self._pending: list[str] = []
        self._written: list[asyncio.Future[None]] = []  # woken (and emptied) after each write
        self._writer: asyncio.Task[None] | None = None

    async def record(self, message_ids: Sequence[str]) -> None:
        """Queue ``message_ids`` for the next write; waits only while too many are queued."""
        while len(self._pending) >= self._pending_max:
            self._start_writer()
            written = asyncio.get_running_loop().create_future()
            self._written.append(written)
            await written
        self._pending.extend(message_ids)
        if self._pending:
            self._start_writer()

    def sizes(self) -> dict[str, int]:
        """Entries held: what the churn tests compare with a fresh worker."""
        return {"pending_statuses": len(self._pending), "status_waiters": len(self._written)}

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(), name="dispatch-statuses")

    async def _write_pending(self) -> None:
        try:
            await asyncio.sleep(self._linger_s)
            while self._pending:
                ids, self._pending = self._pending, []
                await self._write(ids)
                self._wake()
        finally:
            self._writer = None
            self._wake()

    def _wake(self) -> None:
        written, self._written = self._written, []
        for waiter in written:
            if not waiter.done():
                waiter.set_result(None)

    async def _write(self, ids: list[str]) -> None:
        try:
            for start in range(0, len(ids), WRITE_AT_MOST):
                await self._store.advance_status(ids[start : start + WRITE_AT_MOST], self._status)
        except Unavailable as exc:
            log.warning("could not record %d messages as %s: %s", len(ids), self._status, exc.message)
        except Exception:
            # A bug, not an outage: loud in the log, and the writer carries on.
            log.exception("recording %d messages as %s failed", len(ids), self._status)
