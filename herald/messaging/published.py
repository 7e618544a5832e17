"""Recording bus confirms in the store in the background, many messages per write.

A message is stored ``published: "pending"`` before its 202 and marked ``"yes"`` once
RabbitMQ confirmed it; the mark only tells the outbox sweeper not to publish it again
(``services/collect/outbox.py`` waits until pending messages are ``MIN_AGE_S`` old). So
the caller need not wait for it: confirmed ids are collected here and written with one
``mark_published`` per ``linger_s``, well within that age, however many requests
confirmed meanwhile. A mark that cannot be written (the store is down, the process is
killed, the backlog is over its bound) only means the sweeper publishes those messages
again: a duplicate that dispatch and push drop by offset, never a loss. The waiting and
batching are herald/core/batching.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from herald.adapters.store.base import MessageStore
from herald.core.batching import Batcher
from herald.core.errors import Unavailable

log = logging.getLogger("herald.published")

# Far below the outbox sweeper's MIN_AGE_S (5 s): in normal operation every mark lands
# before the sweeper may look at the message.
LINGER_S = 0.05
# Ids per mark_published call: one `$in` list, bounded so one write stays short (the
# stand-in store serialises operations: a long one delays every request's writes).
MAX_IDS_PER_WRITE = 1000
# Ids waiting while the store is slow or down; past this, new ones are left to the sweeper.
MAX_PENDING = 200_000


class PublishedMarks:
    def __init__(
        self,
        store: MessageStore,
        linger_s: float = LINGER_S,
        max_ids_per_write: int = MAX_IDS_PER_WRITE,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._max_pending = max_pending
        # Not in the background until start(): until then marks wait for flush().
        self._batcher: Batcher[str, None] = Batcher(
            self._write, name="published-marks", linger_s=linger_s, max_batch=max_ids_per_write, background=False
        )
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Confirmed ids not written yet."""
        return self._batcher.pending

    def add(self, message_ids: Sequence[str]) -> None:
        """Remember that the bus confirmed these messages; written within about ``linger_s``."""
        pending = self._batcher.pending
        room = self._max_pending - pending
        if room < len(message_ids):
            self.dropped += len(message_ids) - max(room, 0)
            log.warning(
                "%d published marks waiting; %d more left for the outbox sweeper to publish again",
                pending,
                len(message_ids) - max(room, 0),
            )
            message_ids = message_ids[: max(room, 0)]
        self._batcher.add(message_ids)

    async def flush(self) -> None:
        """Write every mark collected so far; the ones the store refuses are dropped (logged)."""
        await self._batcher.flush()

    async def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        """Write what is still waiting and stop: after the HTTP server drained, so the last
        requests' marks land too."""
        await self._batcher.close()

    async def _write(self, batch: list[str]) -> None:
        try:
            await self._store.mark_published(batch)
        except Unavailable as exc:
            log.warning("could not mark %d messages published (they may be sent twice): %s", len(batch), exc.message)
