"""Wire the collect service: its HTTP API on the store and the bus."""

from __future__ import annotations

from herald.adapters import Adapters
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.messaging.published import PublishedMarks
from herald.ops.runtime import HttpServer, Part
from herald.services.collect.app import create_app
from herald.services.collect.outbox import OutboxSweeper


def build(settings: Settings, adapters: Adapters) -> list[Part]:
    assert adapters.store is not None and adapters.bus is not None and adapters.directory is not None
    # Parts stop in reverse: the HTTP server drains first, then the last marks are written.
    marks = PublishedMarks(adapters.store)
    acceptor = Acceptor(adapters.store, adapters.bus, marks)
    app = create_app(settings, adapters.store, acceptor, adapters.directory, adapters.bus)
    server = HttpServer("collect", app, settings.host, settings.port, settings.body_limit, settings.cors_origins)
    outbox = OutboxSweeper(adapters.store, acceptor)
    return [Part("published-marks", marks.start, marks.stop), Part("outbox", outbox.start, outbox.stop), server.part()]
