"""Wire the dispatch service: the worker on the dispatch queue, and health/metrics over HTTP."""

from __future__ import annotations

from herald.adapters import Adapters
from herald.errors import Unavailable
from herald.http import create_api
from herald.runtime import HttpServer, Part
from herald.settings import Settings
from services.dispatch.receipts import ReceiptsWorker
from services.dispatch.worker import DispatchWorker


def build(settings: Settings, adapters: Adapters) -> list[Part]:
    bus, directory, store = adapters.bus, adapters.directory, adapters.store
    assert bus is not None and directory is not None and store is not None
    worker = DispatchWorker(bus, directory, store)

    async def consuming() -> None:
        if not bus.consuming():
            raise Unavailable("the dispatch consumer is not subscribed", code="not_consuming")

    api = create_api(
        "Herald dispatch",
        "Routes accepted messages to push nodes. Health only.",
        checks=[store.ping, directory.ping, bus.ping, consuming],
    )
    server = HttpServer("dispatch", api, settings.host, settings.port, body_limit=1024)

    receipts = ReceiptsWorker(store)

    async def start_worker() -> None:
        await bus.consume_dispatch(worker.handle)
        await bus.consume_receipts(receipts.handle)

    return [Part("dispatch-worker", start_worker, bus.stop_consuming), server.part()]
