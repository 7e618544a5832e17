"""Each app's config (webhook, limits), cached per process for a moment.

Limits are checked on every request and connect, so reading the store each time would
put a round trip on the hot path; the price is that a change takes up to ``CACHE_S`` to
reach every replica.
"""

from __future__ import annotations

import time

from herald.adapters.store.base import Store
from herald.core.model import AppConfig

CACHE_S = 2.0
CACHE_MAX = 10_000


class AppConfigs:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[AppConfig, float]] = {}

    async def get(self, app_id: str) -> AppConfig:
        now = time.monotonic()
        cached = self._cache.get(app_id)
        if cached and cached[1] > now:
            return cached[0]
        config = await self._store.get_app_config(app_id)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[app_id] = (config, now + CACHE_S)
        return config

    def forget(self, app_id: str) -> None:
        self._cache.pop(app_id, None)
