"""Wire the auth service: its HTTP API on the store."""

from __future__ import annotations

from herald.adapters import Adapters
from herald.runtime import HttpServer, Part
from herald.settings import Settings
from services.auth.app import create_app


def build(settings: Settings, adapters: Adapters) -> list[Part]:
    assert adapters.store is not None
    server = HttpServer(
        "auth", create_app(settings, adapters.store), settings.host, settings.port, body_limit=64 * 1024
    )
    return [server.part()]
