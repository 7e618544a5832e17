"""collect's HTTP API: what business systems call to send messages, manage groups and see
who is online."""


from fastapi import FastAPI
from herald.services.collect.groupcommit import GroupCommit
from herald.services.collect.messages import add_json_data_schema, message_routes
from herald.services.collect.people import people_routes
from herald.services.collect.quotas import Quotas

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.messaging.apikeys import AppId, AppKeys
from herald.messaging.appconfig import AppConfigs
from herald.web.api import create_api


def create_app(settings: Settings, store: Store, acceptor: Acceptor, directory: Directory, bus: Bus) -> FastAPI:
    api = create_api(
        "Herald collect",
        "Send messages to users, groups or everyone; manage groups; see who is online.",
        checks=[store.ping],
        # Accepted messages wait in the store for the outbox when RabbitMQ is down; rate
        # limits fail open and presence answers 503 when Redis is.
        soft_checks={"directory": directory.ping, "bus": bus.ping},
    )
    api.state.app_keys = AppKeys(store)
    app_id = AppId
    quotas = Quotas(settings, AppConfigs(store), directory)
    api.include_router(message_routes(app_id, store, GroupCommit(acceptor), directory, quotas))
    api.include_router(people_routes(app_id, store, directory, bus, quotas))
    add_json_data_schema(api)
    return api
