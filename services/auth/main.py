"""Wire the auth service: its HTTP API on the store (the directory and bus close revoked connections)."""

from __future__ import annotations

from herald.adapters import Adapters
from herald.core.settings import Settings
from herald.ops.runtime import HttpServer, Part
from herald.services.auth.app import create_app


def build(settings: Settings, adapters: Adapters) -> list[Part]:
    store, directory, bus = adapters.store, adapters.directory, adapters.bus
    assert store is not None and directory is not None and bus is not None
    server = HttpServer(
        "auth",
        create_app(settings, store, directory, bus),
        settings.host,
        settings.port,
        body_limit=64 * 1024,
        cors_origins=settings.cors_origins,
    )
    return [server.part()]
