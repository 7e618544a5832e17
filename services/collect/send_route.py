"""``POST /v1/messages`` without FastAPI and pydantic on the way: the hot endpoint served
ahead of FastAPI (``herald.web.hot``), its body decoded by msgspec straight into the
command ``MessageService.send`` takes.

FastAPI's middleware, dependency solving, pydantic's validation and its ``Request``
plumbing were more than half of collect's CPU per single-message request. This route answers what is
plainly valid (JSON content, a bearer key, a body that msgspec decodes into the shape
below and that keeps the schema's bounds) by itself. Everything else, every input that
may fail, goes to the FastAPI route declared for the same path, with the body it already
read: that route stays what the OpenAPI document describes and gives every error its
usual status, code and details, so the error contract cannot drift between the two.

What this route accepts is a subset of what the FastAPI route accepts, decoded to the same
values (msgspec, like ``json.loads``, keeps the last of duplicate keys and reads big
integers exactly; it refuses what ``json.loads`` is lenient with, NaN, lone surrogates,
other encodings, and those take the FastAPI route). Errors raised after decoding (an
unknown API key, a bad user id, a rate limit) are ``HeraldError``s, raised here as in the
FastAPI route and answered as its exception handlers answer them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.types import Scope

from herald.core import codec
from herald.core.settings import MAX_BATCH_CEILING
from herald.messaging.apikeys import AppKeys
from herald.services.collect.message_models import MAX_TTL_S
from herald.services.collect.message_service import MessageService
from herald.web.api import HeraldApi
from herald.web.hot import HotRoute, add_hot_route, bearer_key, is_json

PATH = "/v1/messages"


class Recipients(msgspec.Struct, forbid_unknown_fields=True):
    """``To`` of message_models, as msgspec decodes it (types only; bounds in ``_bounded``)."""

    users: list[str] | None = None
    group: str | None = None
    broadcast: bool | None = None


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    """``SendMessage`` of message_models, as msgspec decodes it."""

    to: Recipients
    event: str
    data: Any = None
    ttl_s: int | None = None
    idempotency_key: str | None = None


_decode = msgspec.json.Decoder(SendBody).decode


def decoded(body: bytes) -> SendBody | None:
    """The body as a command when it is plainly valid; None sends it to the FastAPI route."""
    try:
        item = _decode(body)
    except (msgspec.MsgspecError, RecursionError):
        return None
    return item if _bounded(item) else None


def _bounded(item: SendBody) -> bool:
    """The length and range bounds ``SendMessage`` declares (pydantic checks them there)."""
    to = item.to
    return (
        (to.users is None or 1 <= len(to.users) <= MAX_BATCH_CEILING)
        and (to.group is None or 1 <= len(to.group) <= 128)
        and 1 <= len(item.event) <= 64
        and (item.ttl_s is None or 1 <= item.ttl_s <= MAX_TTL_S)
        and (item.idempotency_key is None or 1 <= len(item.idempotency_key) <= 128)
    )


class SendHandler:
    """Answers a plainly valid send (the 202's body); hands anything else on (None)."""

    def __init__(self, keys: AppKeys, messages: MessageService) -> None:
        self._keys = keys
        self._messages = messages

    async def __call__(self, scope: Scope, body: bytes) -> bytes | None:
        item = decoded(body) if is_json(scope) else None
        key = bearer_key(scope)
        if item is None or key is None:
            return None
        app_id = await self._keys.app_for_key(key)
        return codec.dumps({"messages": await self._messages.send(app_id, item)})


def add_send_route(api: HeraldApi) -> HotRoute:
    """Serve ``POST /v1/messages`` by ``SendHandler`` ahead of FastAPI (``herald.web.hot``)."""
    return add_hot_route(api, "POST", PATH, 202, SendHandler(api.state.app_keys, api.state.messages))
