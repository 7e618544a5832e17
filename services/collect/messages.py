"""collect's message endpoints, declared at module level: send to users, a group or
everyone; read status and history. Each turns HTTP into one ``MessageService`` call."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from herald.core import codec
from herald.messaging.apikeys import AppId
from herald.services.collect.message_models import (
    CHANNEL_PATTERN,
    MAX_HISTORY_PAGE,
    BatchResult,
    History,
    MessageStatus,
    SendBatch,
    SendMessage,
    SendResult,
)
from herald.services.collect.message_service import MessageService
from herald.web.api import ERROR_RESPONSES


async def message_service(request: Request) -> MessageService:
    """The app's ``MessageService``, kept in ``app.state.messages`` by ``create_app``.
    (async: FastAPI would run a plain function on a worker thread, per request)."""
    service: MessageService = request.app.state.messages
    return service


Messages = Annotated[MessageService, Depends(message_service)]

message_routes = APIRouter()


def _answer(body: dict[str, Any]) -> Response:
    """A 202 encoded once by orjson.

    The routes still declare their ``response_model`` (the OpenAPI schema and the fuzz
    tests' conformance checks go by it), but FastAPI does not validate a ``Response``
    again: for a batch that re-validation of 1,000 results was a quarter of collect's time.
    The bodies are built to the models' shapes, so nothing is lost by skipping it.
    """
    return Response(codec.dumps(body), status_code=202, media_type="application/json")


def _without_none(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch items as ``response_model_exclude_none`` gave them: no ``"online": null``."""
    for item in results:
        for accepted in item.get("messages") or ():
            if accepted.get("online", False) is None:
                del accepted["online"]
    return results


# Plainly valid sends are answered ahead of FastAPI by send_route.py (herald.web.hot); this
# route documents the endpoint and answers everything that route hands on, every error included.
@message_routes.post(
    "/v1/messages",
    status_code=202,
    response_model=SendResult,
    responses=ERROR_RESPONSES,
    tags=["messages"],
    summary="Send a message to users",
)
async def send(body: SendMessage, app_id: AppId, messages: Messages) -> Response:
    return _answer({"messages": await messages.send(app_id, body)})


@message_routes.post(
    "/v1/messages/batch",
    status_code=202,
    response_model=BatchResult,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    tags=["messages"],
    summary="Send many messages; each item succeeds or fails on its own",
)
async def send_batch(body: SendBatch, app_id: AppId, messages: Messages) -> Response:
    return _answer({"results": _without_none(await messages.send_batch(app_id, body.messages))})


@message_routes.get(
    "/v1/messages/{message_id}",
    response_model=MessageStatus,
    responses=ERROR_RESPONSES,
    tags=["messages"],
    summary="A message and its delivery status",
)
async def get_message(
    app_id: AppId, message_id: Annotated[str, Path(max_length=64)], messages: Messages
) -> dict[str, Any]:
    return await messages.status(app_id, message_id)


@message_routes.get(
    "/v1/channels/{channel}/messages",
    response_model=History,
    responses=ERROR_RESPONSES,
    tags=["messages"],
    summary="A channel's messages in offset order",
)
async def history(
    app_id: AppId,
    channel: Annotated[str, Path(max_length=140, examples=["user:7"], json_schema_extra={"pattern": CHANNEL_PATTERN})],
    messages: Messages,
    since: Annotated[int, Query(ge=0, le=2**62, description="return offsets after this one")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = 100,
) -> dict[str, Any]:
    return await messages.history(app_id, channel, since, limit)
