"""collect's message routes: send to users, a group or everyone; read status and history."""

import contextlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import Response
from herald.services.collect.groupcommit import GroupCommit
from herald.services.collect.online import OnlineLookups
from herald.services.collect.quotas import Quotas
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core import codec
from herald.core.errors import BadRequest, Conflict, HeraldError, NotFound, PayloadTooLarge, TooManyRequests
from herald.core.model import EVENT_RE, GROUP_RE, USER_ID_RE, Message, parse_channel
from herald.core.settings import MAX_BATCH_CEILING
from herald.messaging.accept import Draft, Limits, draft_for
from herald.web.api import ERROR_RESPONSES, STRICT_BODY, json_int

MAX_TTL_S = 365 * 86400
MAX_HISTORY_PAGE = 1000


# Declared in the schema and checked by the handlers, which answer 400 with a precise code
# (invalid_user_id, invalid_group, invalid_event, invalid_recipients, invalid_channel).
_NULL: dict[str, Any] = {"type": "null"}
_NO_BROADCAST: dict[str, Any] = {"enum": [None, False]}
_EXACTLY_ONE = [
    {
        "required": ["users"],
        "properties": {
            "users": {"type": "array", "maxItems": MAX_BATCH_CEILING},
            "group": _NULL,
            "broadcast": _NO_BROADCAST,
        },
    },
    {"required": ["group"], "properties": {"group": {"type": "string"}, "users": _NULL, "broadcast": _NO_BROADCAST}},
    {"required": ["broadcast"], "properties": {"broadcast": {"const": True}, "users": _NULL, "group": _NULL}},
]
CHANNEL_PATTERN = rf"^(broadcast|user:{USER_ID_RE.pattern[1:-1]}|group:{GROUP_RE.pattern[1:-1]})$"


class To(BaseModel):
    """Exactly one of the three."""

    model_config = ConfigDict(**STRICT_BODY, json_schema_extra={"oneOf": _EXACTLY_ONE})
    users: list[Annotated[str, Field(json_schema_extra={"pattern": USER_ID_RE.pattern})]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH_CEILING,
        description="user ids; each gets the message on `user:<id>` (at most HERALD_MAX_BATCH)",
    )
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        json_schema_extra={"pattern": GROUP_RE.pattern},
        description="every member's connections, on `group:<name>`",
    )
    broadcast: bool | None = Field(default=None, description="true: every connected user of the app, on `broadcast`")


# What `data` may hold, as collect's OpenAPI document says it: any JSON, but integers within
# 64 bits (signed or unsigned), which is what the codec carries (a larger one is a 400
# invalid_data). The model keeps `Any` (values are measured and encoded once, in
# ``draft_for``); ``add_json_data_schema`` puts this recursive definition in the document.
JSON_DATA_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "string"},
        {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonData"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonData"}},
    ]
}


def add_json_data_schema(api: FastAPI) -> None:
    """Declare `data` of a message as ``JsonData`` in the app's OpenAPI document."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schemas = generate()["components"]["schemas"]
            schemas["JsonData"] = JSON_DATA_SCHEMA
            data = schemas["SendMessage"]["properties"]["data"]
            schemas["SendMessage"]["properties"]["data"] = {
                "allOf": [{"$ref": "#/components/schemas/JsonData"}],
                "description": data.get("description", ""),
            }
        return api.openapi_schema or generate()

    api.openapi = openapi  # type: ignore[method-assign]


class SendMessage(BaseModel):
    model_config = STRICT_BODY
    to: To
    event: str = Field(
        min_length=1, max_length=64, json_schema_extra={"pattern": EVENT_RE.pattern}, examples=["order.shipped"]
    )
    data: Any = Field(
        default=None,
        description="any JSON value, up to HERALD_MAX_PAYLOAD bytes encoded; integers within 64 bits",
    )
    ttl_s: json_int(1, MAX_TTL_S) | None = Field(default=None, description="kept for replay this long")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="a retry with the same key returns the first result",
    )


class SendBatch(BaseModel):
    model_config = STRICT_BODY
    messages: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH_CEILING,
        description="items shaped like POST /v1/messages bodies, each validated on its own (at most HERALD_MAX_BATCH)",
    )


class Accepted(BaseModel):
    id: str
    channel: str
    offset: int
    online: bool | None = Field(
        description="user channels: whether the recipient had a live connection when it was accepted"
        " (null: unknown, and always null for groups and broadcast)"
    )


class SendResult(BaseModel):
    messages: list[Accepted]


class ItemResult(BaseModel):
    messages: list[Accepted] | None = None
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    results: list[ItemResult]


class DeviceDelivery(BaseModel):
    conn_id: str
    device: str | None
    delivered_at: float
    acked_at: float | None


class StoredMessage(BaseModel):
    id: str
    channel: str
    offset: int
    event: str
    data: Any
    ts: int
    expires_at: float
    status: str = Field(description="accepted, dispatched, delivered (written to a socket) or acked")
    sender: dict[str, str] | None = Field(
        default=None,
        validation_alias="from",
        serialization_alias="from",
        description="{user_id, conn_id} when a client published it from its socket; null for API messages",
    )


class MessageStatus(StoredMessage):
    deliveries: list[DeviceDelivery] = Field(description="one entry per connection it was written to")


class History(BaseModel):
    channel: str
    messages: list[StoredMessage]
    next: int = Field(description="pass as `since` to read on")


def _accepted(messages: list[Message], online: dict[str, bool | None]) -> list[dict[str, Any]]:
    return [{"id": m.id, "channel": m.channel, "offset": m.offset, "online": online[m.channel]} for m in messages]


def _answer(body: dict[str, Any]) -> Response:
    """A 202 encoded once by orjson.

    The routes still declare their ``response_model`` (the OpenAPI schema and the fuzz
    tests' conformance checks go by it), but FastAPI does not validate a ``Response``
    again: for a batch that re-validation of 1,000 results was a quarter of collect's time.
    The bodies are built to the models' shapes here, so nothing is lost by skipping it.
    """
    return Response(codec.dumps(body), status_code=202, media_type="application/json")


def _without_none(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch items as ``response_model_exclude_none`` gave them: no ``"online": null``."""
    for item in results:
        for accepted in item.get("messages") or ():
            if accepted.get("online", False) is None:
                del accepted["online"]
    return results


def message_routes(
    app_id_dependency: Any, store: Store, committer: GroupCommit, directory: Directory, quotas: Quotas
) -> APIRouter:
    api = APIRouter()
    AppId = app_id_dependency
    lookups = OnlineLookups(directory)

    async def accept(app_id: str, drafts: list[Draft]) -> list[list[dict[str, Any]]]:
        await quotas.charge(app_id, sum(len(d.channels) for d in drafts))
        accepted = await committer.accept(app_id, drafts)
        online = await lookups.online(app_id, [m.channel for group in accepted for m in group])
        return [_accepted(group, online) for group in accepted]

    async def send_idempotent(app_id: str, item: SendMessage, draft_: Draft) -> list[dict[str, Any]]:
        key = item.idempotency_key
        if key is None:
            return (await accept(app_id, [draft_]))[0]
        now = time.time()
        earlier = await store.reserve_idempotency(app_id, key, now + draft_.ttl_s, now)
        if earlier == "":
            raise Conflict("a request with this idempotency key is still in progress", code="in_progress")
        if earlier is not None:
            return codec.loads(earlier)
        try:
            result = (await accept(app_id, [draft_]))[0]
        except BaseException:
            with contextlib.suppress(HeraldError):
                await store.release_idempotency(app_id, key)
            raise
        await store.complete_idempotency(app_id, key, codec.dumps_text(result))
        return result

    @api.post(
        "/v1/messages",
        status_code=202,
        response_model=SendResult,
        responses=ERROR_RESPONSES,
        tags=["messages"],
        summary="Send a message to users",
    )
    async def send(body: SendMessage, app_id: AppId) -> Response:
        draft = _draft(body, await quotas.limits(app_id))
        return _answer({"messages": await send_idempotent(app_id, body, draft)})

    @api.post(
        "/v1/messages/batch",
        status_code=202,
        response_model=BatchResult,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["messages"],
        summary="Send many messages; each item succeeds or fails on its own",
    )
    async def send_batch(body: SendBatch, app_id: AppId) -> Response:
        max_batch = await quotas.max_batch(app_id)
        if len(body.messages) > max_batch:
            raise PayloadTooLarge(f"at most {max_batch} messages per batch", code="batch_too_large")
        limits = await quotas.limits(app_id)
        results: list[dict[str, Any]] = [{} for _ in body.messages]
        plain: list[tuple[int, Draft]] = []
        for index, raw in enumerate(body.messages):
            try:
                item = SendMessage.model_validate(raw)
                item_draft = _draft(item, limits)
            except ValidationError as exc:
                results[index] = {"error": _invalid_item(exc)}
                continue
            except HeraldError as exc:
                results[index] = exc.to_body()
                continue
            if item.idempotency_key is None:
                plain.append((index, item_draft))
            else:
                try:
                    results[index] = {"messages": await send_idempotent(app_id, item, item_draft)}
                except (BadRequest, Conflict, TooManyRequests) as exc:
                    results[index] = exc.to_body()
        total = sum(len(d.channels) for _, d in plain)
        if total > max_batch * 10:
            raise PayloadTooLarge(
                f"{total} messages in one request; the limit is {max_batch * 10}",
                code="batch_too_large",
            )
        if plain:
            accepted = await accept(app_id, [d for _, d in plain])
            for (index, _), messages in zip(plain, accepted, strict=True):
                results[index] = {"messages": messages}
        return _answer({"results": _without_none(results)})

    @api.get(
        "/v1/messages/{message_id}",
        response_model=MessageStatus,
        responses=ERROR_RESPONSES,
        tags=["messages"],
        summary="A message and its delivery status",
    )
    async def get_message(app_id: AppId, message_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        message = await store.get_message(app_id, message_id, time.time())
        if message is None:
            raise NotFound("no such message (or it expired)", code="unknown_message")
        deliveries = await store.deliveries_of(app_id, message_id)
        return {**message.to_public(), "deliveries": [d.to_public() for d in deliveries]}

    @api.get(
        "/v1/channels/{channel}/messages",
        response_model=History,
        responses=ERROR_RESPONSES,
        tags=["messages"],
        summary="A channel's messages in offset order",
    )
    async def history(
        app_id: AppId,
        channel: Annotated[
            str, Path(max_length=140, examples=["user:7"], json_schema_extra={"pattern": CHANNEL_PATTERN})
        ],
        since: Annotated[int, Query(ge=0, le=2**62, description="return offsets after this one")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = 100,
    ) -> dict[str, Any]:
        parse_channel(channel)
        messages = await store.read_channel(app_id, channel, since, limit, time.time())
        return {
            "channel": channel,
            "messages": [m.to_public() for m in messages],
            "next": messages[-1].offset if messages else since,
        }

    return api


def _draft(item: SendMessage, limits: Limits) -> Draft:
    # The three fields as a plain dict: model_dump() was a twentieth of a batch's time.
    to = {"users": item.to.users, "group": item.to.group, "broadcast": item.to.broadcast}
    return draft_for(to, item.event, item.data, item.ttl_s, limits)


def _invalid_item(exc: ValidationError) -> dict[str, Any]:
    details = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:20]]
    return {"code": "invalid_request", "message": "the item does not match the schema", "details": details}
