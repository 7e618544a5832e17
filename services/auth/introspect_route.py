"""``POST /v1/introspect/batch`` without FastAPI and pydantic on the way: the hot endpoint
served ahead of FastAPI (``herald.web.hot``), its body decoded by msgspec.

Push nodes ask this once per batch of handshakes in flight, so during a connect storm it
is nearly all of auth's traffic; FastAPI's middleware, dependency solving and pydantic's
validation were half of auth's CPU per request. This route answers what is plainly valid
(JSON, the service token from a source not throttled for wrong ones, a body msgspec decodes
into the shape below within the schema's bounds) by itself and hands everything else, with
the body it read, to the FastAPI route declared for the same path: that route answers
every error (401, 403, 429 with the same throttle, 422) as the OpenAPI document says.
"""

from __future__ import annotations

import msgspec
from starlette.types import Scope

from herald.core.credentials import same_secret
from herald.services.auth.models import MAX_INTROSPECT_BATCH, MAX_TOKEN_LENGTH, Introspections
from herald.services.auth.service import AuthService
from herald.web.api import HeraldApi
from herald.web.hot import HotRoute, add_hot_route, bearer_key, is_json
from herald.web.throttle import FailureThrottle

PATH = "/v1/introspect/batch"


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """``IntrospectBatch`` of models.py, as msgspec decodes it (bounds in ``decoded``)."""

    tokens: list[str]


_decode = msgspec.json.Decoder(BatchBody).decode


def decoded(body: bytes) -> list[str] | None:
    """The tokens when the body is plainly valid; None sends it to the FastAPI route."""
    try:
        tokens = _decode(body).tokens
    except (msgspec.MsgspecError, RecursionError):
        return None
    if not 1 <= len(tokens) <= MAX_INTROSPECT_BATCH:
        return None
    return tokens if all(1 <= len(token) <= MAX_TOKEN_LENGTH for token in tokens) else None


class IntrospectHandler:
    """Answers a plainly valid batch from a push node (the 200's body); hands anything else on."""

    def __init__(self, auth: AuthService, service_token: str, throttle: FailureThrottle) -> None:
        self._auth = auth
        self._service_token = service_token
        self._throttle = throttle

    async def __call__(self, scope: Scope, body: bytes) -> bytes | None:
        tokens = decoded(body) if is_json(scope) else None
        if tokens is None or not self._admitted(scope):
            return None
        results = await self._auth.introspect_many(tokens)
        return Introspections(results=results).model_dump_json().encode()

    def _admitted(self, scope: Scope) -> bool:
        """The service token, from a source the throttle lets try (``require_secret``'s order)."""
        given = bearer_key(scope)
        if given is None:
            return False
        client = scope.get("client")
        if self._throttle.blocked_for(client[0] if client else "") > 0:
            return False
        return same_secret(given, self._service_token)


def add_introspect_route(api: HeraldApi, service_token: str, throttle: FailureThrottle) -> HotRoute:
    """Serve ``POST /v1/introspect/batch`` by ``IntrospectHandler`` ahead of FastAPI."""
    return add_hot_route(api, "POST", PATH, 200, IntrospectHandler(api.state.auth, service_token, throttle))
