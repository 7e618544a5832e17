"""The operator's snapshot a push node serves at ``/ops/snapshot``, for the ``/ops`` page.

A push node already holds what the picture needs: the directory (every node's report and
the per-app rates), the bus (queue depths), the store (app names) and this process's
metrics. Operators only (``Authorization: Bearer <HERALD_ADMIN_TOKEN>``): node ids, app
ids and queue names are not for the public. A node started without an operator token
serves no snapshot at all.

Gathering asks the broker for every queue's depth, so it is done at most once per
``FRESH_S`` whatever the number of open pages: a request within that time of the last
gather gets the same answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.credentials import bearer, same_secret
from herald.ops import cluster_status, metrics, snapshot
from herald.web.throttle import FailureThrottle

FRESH_S = 0.5
SNAPSHOT_PATH = "/ops/snapshot"


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message}}


class OpsSnapshots:
    def __init__(
        self,
        node_id: str,
        directory: Directory,
        bus: Bus,
        store: Store | None,
        admin_token: str,
        registry: CollectorRegistry = metrics.REGISTRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_id = node_id
        self._directory = directory
        self._bus = bus
        self._store = store
        self._admin_token = admin_token
        self._registry = registry
        self._clock = clock
        self._history = snapshot.History()
        self._last: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._failures = FailureThrottle()

    async def answer(self, path: str, authorization: str | None, source: str = "") -> tuple[int, dict[str, Any]]:
        """The status and JSON body for a request under ``/ops/``; wrong operator tokens are
        throttled per ``source`` address like auth's (``herald.web.throttle``)."""
        if path != SNAPSHOT_PATH:
            return _error(404, "not_found", f"the operator's data is at {SNAPSHOT_PATH}")
        if not self._admin_token:
            return _error(403, "ops_disabled", "this node has no operator token (HERALD_ADMIN_TOKEN): no snapshot")
        given = bearer(authorization)
        if given is None:
            return _error(401, "missing_credential", "send the operator token as `Authorization: Bearer <token>`")
        wait_s = self._failures.blocked_for(source)
        if wait_s > 0:
            message = f"too many wrong operator tokens from this address; try again in {math.ceil(wait_s)} s"
            return _error(429, "too_many_failures", message)
        if not same_secret(given, self._admin_token):
            self._failures.failed(source)
            return _error(401, "invalid_credential", "that is not this cluster's operator token")
        return 200, await self.snapshot()

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < FRESH_S:
                return self._last[1]
            cluster = await cluster_status.gather(self._directory, self._bus, self._store, int(time.time() * 1000))
            current = snapshot.sample_of(snapshot.read_registry(self._registry), self._clock())
            doc = snapshot.document(self._node_id, cluster, current, self._history.baseline(current.at_s))
            self._history.add(current)
            self._last = (now, doc)
            return doc
