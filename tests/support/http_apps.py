"""auth and collect as ASGI apps on in-process adapters (SQLite in memory, the memory
directory and bus), served through the same middleware stack as their processes
(``herald.ops.runtime.served``): for tests that need to break a dependency or pick the
client's address, which a real process does not let them do."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.credentials import secret_hash
from herald.core.model import App
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.ops.runtime import served
from herald.services.auth.app import create_app as auth_app
from herald.services.collect.app import create_app as collect_app

ADMIN = "operator-token-for-tests-" + "x" * 16
SERVICE = "service-token-for-tests-" + "y" * 16
KEY = "hk_security-test-key"
APP_ID = "app_00000000000000ee"


@dataclass
class Apps:
    settings: Settings
    store: SqliteStore
    directory: MemoryDirectory
    bus: MemoryBus
    auth: httpx.AsyncBaseTransport
    collect: httpx.AsyncBaseTransport

    def client(self, service: str, source: str = "127.0.0.1", token: str | None = KEY) -> httpx.AsyncClient:
        """A client of ``service`` whose requests come from ``source``."""
        app = self.auth if service == "auth" else self.collect
        assert isinstance(app, httpx.ASGITransport)
        transport = httpx.ASGITransport(app=app.app, client=(source, 40000), raise_app_exceptions=False)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(transport=transport, base_url=f"http://{service}", headers=headers)


class Failing:
    """The store with some methods failing: ``{"ping": Unavailable(...)}``."""

    def __init__(self, store: SqliteStore, failures: Mapping[str, BaseException]) -> None:
        self._store = store
        self._failures = failures

    def __getattr__(self, name: str) -> Any:
        if name in self._failures:
            failure = self._failures[name]

            async def fail(*_: Any, **__: Any) -> Any:
                raise failure

            return fail
        return getattr(self._store, name)


@contextlib.asynccontextmanager
async def http_apps(
    env: Mapping[str, str] | None = None, failures: Mapping[str, BaseException] | None = None
) -> AsyncIterator[Apps]:
    """The apps, with ``failures`` (store method name: exception) raised by their store."""
    settings = Settings.from_env(
        "standalone", {"HERALD_ADMIN_TOKEN": ADMIN, "HERALD_SERVICE_TOKEN": SERVICE, **(env or {})}
    )
    store = SqliteStore(":memory:")
    await store.start()
    directory, bus = MemoryDirectory(), MemoryBus()
    await store.insert_app(App(APP_ID, "security", time.time()))
    await store.replace_api_key(APP_ID, secret_hash(KEY))
    used: Any = Failing(store, failures) if failures else store
    auth = served(auth_app(settings, used, directory, bus), 64 * 1024)
    collect = served(collect_app(settings, used, Acceptor(used, bus), directory, bus), settings.body_limit)
    try:
        yield Apps(
            settings,
            store,
            directory,
            bus,
            httpx.ASGITransport(app=auth, raise_app_exceptions=False),
            httpx.ASGITransport(app=collect, raise_app_exceptions=False),
        )
    finally:
        await store.close()
