"""collect's message bodies, as its OpenAPI document declares them: what is sent, what is answered."""

from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict, JsonValue

from herald.core.model import EVENT_RE, GROUP_RE, USER_ID_RE
from herald.core.settings import MAX_BATCH_CEILING
from herald.web.api import INTEGRAL, STRICT_BODY

MAX_TTL_S = 365 * 86400
MAX_HISTORY_PAGE = 1000


# Declared in the schema and checked by the handlers, which answer 400 with a precise code
# (invalid_user_id, invalid_group, invalid_event, invalid_recipients, invalid_channel).
_NULL: JsonDict = {"type": "null"}
_NO_BROADCAST: JsonDict = {"enum": [None, False]}
_EXACTLY_ONE: list[JsonValue] = [
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
    ttl_s: Annotated[int, Field(ge=1, le=MAX_TTL_S), INTEGRAL] | None = Field(
        default=None, description="kept for replay this long"
    )
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
