"""dispatch's numbers for operators: per-app message rates in the directory (read by
`herald status`) and the bus queues' depths in ``/metrics``.

Counting is in memory per batch and written once a second, so no message waits on it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.core.errors import Unavailable
from herald.ops import metrics
from herald.ops.periodic import Periodic

log = logging.getLogger("herald.dispatch.stats")

FLUSH_S = 1.0
QUEUES_EVERY_S = 5.0


class DispatchStats:
    def __init__(self, directory: Directory, bus: Bus, event_groups: tuple[str, ...]) -> None:
        self._directory = directory
        self._bus = bus
        self._event_groups = event_groups
        self._counts: Counter[str] = Counter()  # per app; emptied by each flush (every FLUSH_S)
        self._periodic = Periodic("dispatch-stats", FLUSH_S, self._tick)
        self._next_sample = 0.0

    def count(self, messages: Iterable[dict[str, Any]]) -> None:
        self._counts.update(message["app"] for message in messages)

    def sizes(self) -> dict[str, int]:
        """Entries held: what the churn tests compare with a fresh worker."""
        return {"counted_apps": len(self._counts)}

    async def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        await self.flush()

    async def flush(self) -> None:
        counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            await self._directory.count_messages(counts, int(time.time()))
        except Unavailable as exc:
            log.info("message counts for one second lost (%s); rates only, nothing else", exc.message)

    async def sample_queues(self) -> None:
        try:
            depths = await self._bus.queue_depths(event_groups=self._event_groups)
        except Unavailable as exc:
            log.info("queue depths unavailable: %s", exc.message)
            return
        for queue, depth in depths.items():
            metrics.queue_depth.labels(queue).set(depth)

    async def _tick(self) -> None:
        try:
            await self.flush()
            if time.monotonic() >= self._next_sample:
                self._next_sample = time.monotonic() + QUEUES_EVERY_S
                await self.sample_queues()
        except Exception:
            # Numbers for operators must never stop, nor stop anything else.
            log.exception("dispatch stats failed; trying again in %.0f s", FLUSH_S)
