"""collect's HTTP API: what business systems call to send messages, manage groups and see
who is online.

The endpoints live in ``messages.py`` and ``people.py``, the operations in
``message_service.py`` and ``people_service.py``; this module wires them to one
process's adapters.
"""

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.messaging.apikeys import AppKeys
from herald.messaging.appconfig import AppConfigs
from herald.services.collect.groupcommit import GroupCommit
from herald.services.collect.message_models import add_json_data_schema
from herald.services.collect.message_service import MessageService
from herald.services.collect.messages import message_routes
from herald.services.collect.online import OnlineLookups
from herald.services.collect.people import people_routes
from herald.services.collect.people_service import PeopleService
from herald.services.collect.quotas import Quotas
from herald.services.collect.send_route import add_send_route
from herald.web.api import HeraldApi, create_api


def create_app(settings: Settings, store: Store, acceptor: Acceptor, directory: Directory, bus: Bus) -> HeraldApi:
    api = create_api(
        "Herald collect",
        "Send messages to users, groups or everyone; manage groups; see who is online.",
        checks=[store.ping],
        # Accepted messages wait in the store for the outbox when RabbitMQ is down; rate
        # limits fail open and presence answers 503 when Redis is.
        soft_checks={"directory": directory.ping, "bus": bus.ping},
    )
    quotas = Quotas(settings, AppConfigs(store), directory)
    api.state.app_keys = AppKeys(store)
    api.state.messages = MessageService(
        store, GroupCommit(acceptor, max_in_flight=store.concurrent_writes), OnlineLookups(directory), quotas
    )
    api.state.people = PeopleService(store, directory, bus, quotas)
    api.include_router(message_routes)
    api.include_router(people_routes)
    add_send_route(api)
    add_json_data_schema(api)
    return api
