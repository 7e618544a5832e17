"""Each app's config (webhook, limits), cached per process for a moment.

Limits are checked on every request and connect, so reading the store each time would
put a round trip on the hot path; the price is that a change takes up to ``CACHE_S`` to
reach every replica.
"""

from __future__ import annotations

import asyncio
import functools
import time

from herald.adapters.store.base import Store
from herald.core.model import AppConfig

CACHE_S = 2.0
CACHE_MAX = 10_000


class AppConfigs:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[AppConfig, float]] = {}
        # Store reads under way, by app: when a busy app's entry expires every request it
        # has in flight misses at once, and they share one read. (Each read its own was a
        # twentieth of collect's CPU per single-message request: with the store slow to
        # answer, every request of the wait missed too.)
        self._reading: dict[str, asyncio.Future[AppConfig]] = {}

    async def get(self, app_id: str) -> AppConfig:
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached and cached[1] > now:
            return cached[0]
        reading = self._reading.get(app_id)
        if reading is None:
            reading = self._reading[app_id] = asyncio.ensure_future(self._store.get_app_config(app_id))
            reading.add_done_callback(functools.partial(self._read, app_id))
        return await asyncio.shield(reading)

    def _read(self, app_id: str, reading: asyncio.Future[AppConfig]) -> None:
        """Cache what a read found, unless ``forget`` came in the meantime."""
        failed = reading.cancelled() or reading.exception() is not None  # retrieved: callers may have left
        if self._reading.get(app_id) is not reading:
            return
        del self._reading[app_id]
        if failed:
            return
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[app_id] = (reading.result(), time.monotonic() + CACHE_S)

    def forget(self, app_id: str) -> None:
        self._cache.pop(app_id, None)
        self._reading.pop(app_id, None)
