"""Wire the dispatch service: the worker on the dispatch queue, and health/metrics over HTTP."""

from __future__ import annotations

from herald.adapters import Adapters
from herald.core.errors import Unavailable
from herald.core.settings import Settings
from herald.messaging.appconfig import AppConfigs
from herald.messaging.webhooks import WebhookSender
from herald.ops.runtime import HttpServer, Part
from herald.services.dispatch import dead_letters
from herald.services.dispatch.rate_counter import DispatchStats
from herald.services.dispatch.receipt_writer import ReceiptsWorker
from herald.services.dispatch.worker import DispatchWorker
from herald.web.api import create_api

# Every dispatch worker competes on this group's queue: each event is POSTed once.
WEBHOOK_GROUP = "webhooks"


def build(settings: Settings, adapters: Adapters) -> list[Part]:
    bus, directory, store = adapters.bus, adapters.directory, adapters.store
    assert bus is not None and directory is not None and store is not None
    stats = DispatchStats(directory, bus, (WEBHOOK_GROUP,))
    worker = DispatchWorker(bus, directory, store, stats)

    async def consuming() -> None:
        if not bus.consuming():
            raise Unavailable("the dispatch consumer is not subscribed", code="not_consuming")

    api = create_api(
        "Herald dispatch",
        "Routes accepted messages to push nodes. Health, metrics and the operator's dead letters.",
        checks=[store.ping, directory.ping, bus.ping, consuming],
    )
    dead_letters.install(api, bus, settings.admin_token)
    server = HttpServer("dispatch", api, settings.host, settings.port, body_limit=1024 * 1024)

    receipts = ReceiptsWorker(store, bus)
    # Retries wait in the bus (RabbitMQ's delay queues; in memory for standalone), so any
    # dispatch worker running when one is due makes it: a deploy or a crash loses none.
    webhooks = WebhookSender(AppConfigs(store).get, bus.publish_retry, block_private=settings.webhook_block_private)

    async def start_worker() -> None:
        await webhooks.start()
        await bus.consume_dispatch(worker.handle)
        await bus.consume_receipts(receipts.handle)
        await bus.consume_events(WEBHOOK_GROUP, ["#"], webhooks.handle)
        await bus.consume_retries(webhooks.handle_retry)
        await stats.start()

    async def stop_worker() -> None:
        await bus.stop_consuming()
        await worker.close()
        await webhooks.close()
        await stats.stop()

    return [Part("dispatch-worker", start_worker, stop_worker), server.part()]
