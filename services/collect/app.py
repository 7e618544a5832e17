"""collect's HTTP API: what business systems call to send messages and read them back."""

import contextlib
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald import codec
from herald.accept import Acceptor, Draft, Limits, draft_for_users
from herald.apikeys import AppKeys
from herald.directory.base import Directory
from herald.errors import BadRequest, Conflict, HeraldError, NotFound, PayloadTooLarge, Unavailable
from herald.http import ERROR_RESPONSES, create_api
from herald.model import Message, parse_channel
from herald.settings import Settings
from herald.store.base import Store

MAX_TTL_S = 365 * 86400
MAX_HISTORY_PAGE = 1000


class To(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[str] = Field(min_length=1, description="user ids; each gets the message on `user:<id>`")


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: To
    event: str = Field(min_length=1, max_length=64, examples=["order.shipped"])
    data: Any = Field(default=None, description="any JSON value, up to HERALD_MAX_PAYLOAD bytes encoded")
    ttl_s: int | None = Field(default=None, ge=1, le=MAX_TTL_S, description="kept for replay this long")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="a retry with the same key returns the first result",
    )


class SendBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[dict[str, Any]] = Field(
        min_length=1, description="items shaped like POST /v1/messages bodies, each validated on its own"
    )


class Accepted(BaseModel):
    id: str
    channel: str
    offset: int
    online: bool | None = Field(
        description="whether the recipient had a live connection when it was accepted (null: unknown)"
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


class MessageStatus(StoredMessage):
    deliveries: list[DeviceDelivery] = Field(description="one entry per connection it was written to")


class History(BaseModel):
    channel: str
    messages: list[StoredMessage]
    next: int = Field(description="pass as `since` to read on")


def _accepted(messages: list[Message], online: dict[str, bool | None]) -> list[dict[str, Any]]:
    return [{"id": m.id, "channel": m.channel, "offset": m.offset, "online": online[m.channel]} for m in messages]


def create_app(settings: Settings, store: Store, acceptor: Acceptor, directory: Directory) -> FastAPI:
    api = create_api("Herald collect", "Send messages to users; read their status and history.", checks=[store.ping])
    AppId = Annotated[str, Depends(AppKeys(store).dependency())]
    limits = Limits(settings.max_payload, settings.max_batch, settings.message_ttl_s)

    def draft(item: SendMessage) -> Draft:
        return draft_for_users(item.to.users, item.event, item.data, item.ttl_s, limits)

    async def accept(app_id: str, drafts: list[Draft]) -> list[list[dict[str, Any]]]:
        accepted = await acceptor.accept(app_id, drafts)
        online = await presence(app_id, [m.channel for group in accepted for m in group])
        return [_accepted(group, online) for group in accepted]

    async def presence(app_id: str, channels: list[str]) -> dict[str, bool | None]:
        """Per recipient channel: connected right now? None when the directory cannot say."""
        recipients = [(app_id, parse_channel(channel)[1]) for channel in channels]
        try:
            nodes = await directory.nodes_for(recipients)
        except Unavailable:
            return dict.fromkeys(channels)
        return {channel: recipient in nodes for channel, recipient in zip(channels, recipients, strict=True)}

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
    async def send(body: SendMessage, app_id: AppId) -> dict[str, Any]:
        return {"messages": await send_idempotent(app_id, body, draft(body))}

    @api.post(
        "/v1/messages/batch",
        status_code=202,
        response_model=BatchResult,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["messages"],
        summary="Send many messages; each item succeeds or fails on its own",
    )
    async def send_batch(body: SendBatch, app_id: AppId) -> dict[str, Any]:
        if len(body.messages) > settings.max_batch:
            raise PayloadTooLarge(f"at most {settings.max_batch} messages per batch", code="batch_too_large")
        results: list[dict[str, Any]] = [{} for _ in body.messages]
        plain: list[tuple[int, Draft]] = []
        for index, raw in enumerate(body.messages):
            try:
                item = SendMessage.model_validate(raw)
                item_draft = draft(item)
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
                except (BadRequest, Conflict) as exc:
                    results[index] = exc.to_body()
        total = sum(len(d.channels) for _, d in plain)
        if total > settings.max_batch * 10:
            raise PayloadTooLarge(
                f"{total} messages in one request; the limit is {settings.max_batch * 10}",
                code="batch_too_large",
            )
        if plain:
            accepted = await accept(app_id, [d for _, d in plain])
            for (index, _), messages in zip(plain, accepted, strict=True):
                results[index] = {"messages": messages}
        return {"results": results}

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
        channel: Annotated[str, Path(max_length=140, examples=["user:7"])],
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


def _invalid_item(exc: ValidationError) -> dict[str, Any]:
    details = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:20]]
    return {"code": "invalid_request", "message": "the item does not match the schema", "details": details}
