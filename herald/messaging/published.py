"""Recording bus confirms in the store in the background, many messages per write.

A message is stored ``published: "pending"`` before its 202 and marked ``"yes"`` once
RabbitMQ confirmed it; the mark only tells the outbox sweeper not to publish it again
(``services/collect/outbox.py`` waits until pending messages are ``MIN_AGE_S`` old). So
the caller need not wait for it: confirmed ids are collected here and written with one
``mark_published`` per ``linger_s``, well within that age, however many requests
confirmed meanwhile. A mark that cannot be written (the store is down, the process is
killed, the backlog is over its bound) only means the sweeper publishes those messages
again: a duplicate that dispatch and push drop by offset, never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from herald.adapters.store.base import Store
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
        store: Store,
        linger_s: float = LINGER_S,
        max_ids_per_write: int = MAX_IDS_PER_WRITE,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._linger_s = linger_s
        self._max_ids_per_write = max_ids_per_write
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Confirmed ids not written yet."""
        return len(self._pending)

    def add(self, message_ids: Sequence[str]) -> None:
        """Remember that the bus confirmed these messages; written within about ``linger_s``."""
        room = self._max_pending - len(self._pending)
        if room < len(message_ids):
            self.dropped += len(message_ids) - max(room, 0)
            log.warning(
                "%d published marks waiting; %d more left for the outbox sweeper to publish again",
                len(self._pending),
                len(message_ids) - max(room, 0),
            )
            message_ids = message_ids[: max(room, 0)]
        self._pending.extend(message_ids)
        self._wake.set()

    async def flush(self) -> None:
        """Write every mark collected so far; the ones the store refuses stay pending in it."""
        async with self._writing:
            while self._pending:
                # Dropped from the list only once written (or refused): a cancelled write
                # (shutdown) leaves them for stop()'s last flush.
                batch = self._pending[: self._max_ids_per_write]
                try:
                    await self._store.mark_published(batch)
                except Unavailable as exc:
                    log.warning(
                        "could not mark %d messages published (they may be sent twice): %s", len(batch), exc.message
                    )
                del self._pending[: len(batch)]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="published-marks")

    async def stop(self) -> None:
        """Stop the loop and write what it still holds: after the HTTP server drained, so
        the last requests' marks land too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._linger_s)
            self._wake.clear()
            await self.flush()
