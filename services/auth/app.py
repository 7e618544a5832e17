"""auth's HTTP API: apps and their keys (operator), connect tokens (apps), introspection (services).

The endpoints live in ``services/auth/routes.py``, the operations in
``services/auth/service.py``; this module wires them to one process's adapters.
"""

from fastapi import Depends, FastAPI

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.settings import Settings
from herald.messaging.apikeys import AppKeys
from herald.services.auth.introspect_route import add_introspect_route
from herald.services.auth.routes import app_routes, operator_routes, service_routes
from herald.services.auth.service import AuthService
from herald.web.api import create_api, secret_dependency
from herald.web.throttle import FailureThrottle


def create_app(settings: Settings, store: Store, directory: Directory, bus: Bus) -> FastAPI:
    api = create_api(
        "Herald auth",
        "Apps, API keys and user connect tokens.",
        checks=[store.ping],
        # Revoking closes connections through Redis and RabbitMQ; issuing needs neither.
        soft_checks={"directory": directory.ping, "bus": bus.ping},
    )
    keys = AppKeys(store)
    api.state.app_keys = keys
    api.state.auth = AuthService(store, directory, bus, keys, settings.token_ttl_s)
    operator = secret_dependency(settings.admin_token, "operator (HERALD_ADMIN_TOKEN)", "OperatorToken")
    service_failures = FailureThrottle()
    service = secret_dependency(
        settings.service_token, "service (HERALD_SERVICE_TOKEN)", "ServiceToken", service_failures
    )
    api.include_router(operator_routes, dependencies=[Depends(operator)])
    api.include_router(app_routes)
    api.include_router(service_routes, dependencies=[Depends(service)])
    add_introspect_route(api, settings.service_token, service_failures)
    return api
