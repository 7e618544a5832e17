"""auth's request and response bodies, as its OpenAPI document declares them."""

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from herald.core.model import USER_ID_RE
from herald.core.permissions import MAX_PATTERNS, PATTERN_RE
from herald.core.settings import MAX_BATCH_CEILING
from herald.web.api import INTEGRAL, STRICT_BODY

MAX_TOKEN_TTL_S = 30 * 86400
# Tokens per batch introspection: a push node sends the tokens of the handshakes in flight
# together, and a batch this size is one store query and well under a millisecond to answer.
MAX_INTROSPECT_BATCH = 256
MAX_TOKEN_LENGTH = 512

# ASCII only, as URLs are (RFC 3986; percent-encode the rest): `\S` differs between the regex
# dialects of the schema (ECMA-262) and of pydantic (Rust), e.g. for U+0085.
URL_PATTERN = r"^(https?://[!-~]+)?$"

# Declared in the schema, checked by the handler (400 invalid_user_id, like collect's).
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, json_schema_extra={"pattern": USER_ID_RE.pattern})]


class NewApp(BaseModel):
    model_config = STRICT_BODY
    name: str = Field(min_length=1, max_length=100)


class AppCreated(BaseModel):
    app_id: str
    name: str
    api_key: str = Field(description="shown once; only its hash is stored")


class KeyRotated(BaseModel):
    app_id: str
    api_key: str


class LimitsBody(BaseModel):
    model_config = STRICT_BODY
    messages_per_s: float = Field(default=0, ge=0, le=1e9, description="token bucket rate; 0: the default")
    burst: Annotated[int, Field(ge=0, le=10**9), INTEGRAL] = Field(
        default=0, description="bucket size; 0: one second's worth"
    )
    max_payload: Annotated[int, Field(ge=16, le=16 * 1024 * 1024), INTEGRAL] | None = None
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH_CEILING), INTEGRAL] | None = None
    connections_per_user: Annotated[int, Field(ge=0, le=1_000_000), INTEGRAL] = 0
    groups_per_user: Annotated[int, Field(ge=0, le=1_000_000), INTEGRAL] = 0
    frames_per_s: float = Field(default=0, ge=0, le=1e6)


class ConfigPatch(BaseModel):
    model_config = STRICT_BODY
    webhook_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=URL_PATTERN,
        description='where events are POSTed, signed; null or "" turns webhooks off',
    )
    limits: LimitsBody | None = None
    rotate_webhook_secret: bool = False
    publish_hook_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=URL_PATTERN,
        description="push nodes POST each client publish here first (signed with the webhook secret);"
        ' it answers {"allow": true, "data"?: ...} or {"allow": false, "reason": ...}; null or "" turns it off',
    )


class AppSettings(BaseModel):
    app_id: str
    webhook_url: str | None
    webhook_secret: str | None = Field(description="HMAC-SHA256 key of the X-Herald-Signature header")
    limits: LimitsBody
    publish_hook_url: str | None = None


class NewToken(BaseModel):
    model_config = STRICT_BODY
    user_id: str = Field(pattern=USER_ID_RE.pattern, min_length=1, max_length=128)
    ttl_s: Annotated[int, Field(ge=1, le=MAX_TOKEN_TTL_S), INTEGRAL] | None = None
    device: str | None = Field(default=None, min_length=1, max_length=64, description="label shown in presence")
    publish: list[Annotated[str, Field(json_schema_extra={"pattern": PATTERN_RE.pattern})]] | None = Field(
        default=None,
        max_length=MAX_PATTERNS,
        description="channel patterns this user may publish to from the socket, e.g. group:room-*, user:*;"
        " none by default",
        examples=[["group:room-*"]],
    )


class TokenIssued(BaseModel):
    token: str
    user_id: str
    expires_at: float
    device: str | None = None
    publish: list[str] = Field(default_factory=list)


class Revocation(BaseModel):
    model_config = STRICT_BODY
    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH, description="the connect token to revoke")


class Introspect(BaseModel):
    model_config = STRICT_BODY
    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class IntrospectBatch(BaseModel):
    model_config = STRICT_BODY
    tokens: list[Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]] = Field(
        min_length=1, max_length=MAX_INTROSPECT_BATCH, description="connect tokens, answered in this order"
    )


class Introspection(BaseModel):
    active: bool
    app_id: str | None = None
    user_id: str | None = None
    exp: float | None = None
    device: str | None = None
    publish: list[str] = Field(default_factory=list)


class Introspections(BaseModel):
    results: list[Introspection] = Field(description="one per token sent, in the same order")
