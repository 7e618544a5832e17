"""Resolve an app's API key to its app id, for every HTTP API that apps call.

Keys live hashed in the store. Lookups are cached for ``CACHE_S`` seconds per process so
a busy publisher costs no store round trip per request; the price is that a rotated key
keeps working for at most that long on replicas that had just seen it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald.adapters.store.base import Store
from herald.core.credentials import new_api_key, secret_hash
from herald.core.errors import Unauthorized

CACHE_S = 2.0
CACHE_MAX = 10_000

bearer_scheme = HTTPBearer(auto_error=False, description="an app's API key")


async def issue_api_key(store: Store, app_id: str) -> str:
    """A new key for the app, replacing its others; only the hash is stored, so this is
    the one time anybody sees the key."""
    key = new_api_key()
    await store.replace_api_key(app_id, secret_hash(key))
    return key


class AppKeys:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[str, float]] = {}
        # Store reads under way, by key hash: when a busy publisher's entry expires, every
        # request it has in flight misses at once, and they share one read.
        self._reading: dict[str, asyncio.Future[str | None]] = {}

    async def app_for_key(self, key: str) -> str:
        key_hash = secret_hash(key)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached and cached[1] > now:
            return cached[0]
        reading = self._reading.get(key_hash)
        if reading is None:
            reading = self._reading[key_hash] = asyncio.ensure_future(self._store.app_for_key(key_hash))
            reading.add_done_callback(self._read)
        app_id = await asyncio.shield(reading)
        if app_id is None:
            self._cache.pop(key_hash, None)
            raise Unauthorized("unknown API key", code="bad_api_key")
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key_hash] = (app_id, now + CACHE_S)
        return app_id

    def _read(self, reading: asyncio.Future[str | None]) -> None:
        for key_hash, pending in list(self._reading.items()):
            if pending is reading:
                del self._reading[key_hash]
        if not reading.cancelled():
            reading.exception()  # retrieved here too: every caller may have given up

    def forget(self, app_id: str) -> None:
        """Drop this process's cached keys of an app (after rotating its key here)."""
        self._cache = {h: entry for h, entry in self._cache.items() if entry[0] != app_id}


async def calling_app(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> str:
    """A FastAPI dependency yielding the calling app's id, or answering 401.

    It resolves the key with the ``AppKeys`` the app keeps in ``app.state.app_keys``, so
    routes declared at module level share their app's cache.
    """
    if credentials is None or not credentials.credentials:
        raise Unauthorized("send the app's API key as `Authorization: Bearer <key>`", code="missing_credential")
    keys: AppKeys = request.app.state.app_keys
    return await keys.app_for_key(credentials.credentials)


AppId = Annotated[str, Depends(calling_app)]
