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
loses the statuses of at most the last write's worth of messages, never a message. The
lingering and batching are herald/core/batching.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from herald.adapters.store.base import MessageStore
from herald.core.batching import Batcher
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
        store: MessageStore,
        status: str = "dispatched",
        linger_s: float = LINGER_S,
        pending_max: int = PENDING_MAX,
    ) -> None:
        self._store = store
        self._status = status
        self._pending_max = pending_max
        self._batcher: Batcher[str, None] = Batcher(
            self._write, name="dispatch-statuses", linger_s=linger_s, max_batch=WRITE_AT_MOST
        )

    async def record(self, message_ids: Sequence[str]) -> None:
        """Queue ``message_ids`` for the next write; waits only while too many are queued."""
        while self._batcher.pending >= self._pending_max:
            await self._batcher.flush()
        self._batcher.add(message_ids)

    def sizes(self) -> dict[str, int]:
        """Entries held: what the churn tests compare with a fresh worker."""
        return {f"statuses_{name}": size for name, size in self._batcher.sizes().items()}

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        await self._batcher.flush()

    async def _write(self, ids: list[str]) -> None:
        try:
            await self._store.advance_status(ids, self._status)
        except Unavailable as exc:
            log.warning("could not record %d messages as %s: %s", len(ids), self._status, exc.message)
        except Exception:
            # A bug, not an outage: loud in the log, and the writer carries on.
            log.exception("recording %d messages as %s failed", len(ids), self._status)
