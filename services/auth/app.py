"""auth's HTTP API: apps and their keys (operator), connect tokens (apps), introspection (services)."""

import time
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Response
from pydantic import BaseModel, Field

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.commands import Kick
from herald.core.credentials import new_app_id, new_connect_token, new_webhook_secret, secret_hash
from herald.core.errors import NotFound
from herald.core.model import USER_ID_RE, App, AppConfig, AppLimits, TokenRecord, check_user_id
from herald.core.permissions import MAX_PATTERNS, PATTERN_RE, check_patterns
from herald.core.settings import MAX_BATCH_CEILING, Settings
from herald.messaging.apikeys import AppKeys, issue_api_key
from herald.messaging.to_nodes import send_to_all_nodes
from herald.web.api import ERROR_RESPONSES, STRICT_BODY, create_api, json_int, secret_dependency

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
    burst: json_int(0, 10**9) = Field(default=0, description="bucket size; 0: one second's worth")
    max_payload: json_int(16, 16 * 1024 * 1024) | None = None
    max_batch: json_int(1, MAX_BATCH_CEILING) | None = None
    connections_per_user: json_int(0, 1_000_000) = 0
    groups_per_user: json_int(0, 1_000_000) = 0
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
    ttl_s: json_int(1, MAX_TOKEN_TTL_S) | None = None
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


def _introspection(record: TokenRecord | None) -> Introspection:
    if record is None:
        return Introspection(active=False)
    return Introspection(
        active=True,
        app_id=record.app_id,
        user_id=record.user_id,
        exp=record.expires_at,
        device=record.device,
        publish=list(record.publish),
    )


def _settings_of(app_id: str, config: AppConfig) -> AppSettings:
    return AppSettings(
        app_id=app_id,
        webhook_url=config.webhook_url,
        webhook_secret=config.webhook_secret,
        limits=LimitsBody.model_validate(config.limits.to_dict(), strict=False),  # as stored
        publish_hook_url=config.publish_hook_url,
    )


def create_app(settings: Settings, store: Store, directory: Directory, bus: Bus) -> FastAPI:
    api = create_api(
        "Herald auth",
        "Apps, API keys and user connect tokens.",
        checks=[store.ping],
        # Revoking closes connections through Redis and RabbitMQ; issuing needs neither.
        soft_checks={"directory": directory.ping, "bus": bus.ping},
    )
    keys = AppKeys(store)
    current_app = keys.dependency()
    AppId = Annotated[str, Depends(current_app)]

    operator = secret_dependency(settings.admin_token, "operator (HERALD_ADMIN_TOKEN)", "OperatorToken")
    service = secret_dependency(settings.service_token, "service (HERALD_SERVICE_TOKEN)", "ServiceToken")

    @api.post(
        "/v1/apps",
        status_code=201,
        response_model=AppCreated,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["apps"],
        summary="Create an app (tenant)",
    )
    async def create_app_(body: NewApp) -> AppCreated:
        app = App(app_id=new_app_id(), name=body.name, created_at=time.time())
        await store.insert_app(app)
        key = await issue_api_key(store, app.app_id)
        return AppCreated(app_id=app.app_id, name=app.name, api_key=key)

    @api.post(
        "/v1/apps/{app_id}/keys",
        status_code=201,
        response_model=KeyRotated,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["apps"],
        summary="Rotate the app's key",
    )
    async def rotate_key(app_id: str) -> KeyRotated:
        if len(app_id) > 64 or await store.get_app(app_id) is None:
            raise NotFound("no such app", code="unknown_app")
        key = await issue_api_key(store, app_id)
        keys.forget(app_id)
        return KeyRotated(app_id=app_id, api_key=key)

    async def existing_app(app_id: str) -> None:
        if len(app_id) > 64 or await store.get_app(app_id) is None:
            raise NotFound("no such app", code="unknown_app")

    @api.get(
        "/v1/apps/{app_id}",
        response_model=AppSettings,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["apps"],
        summary="The app's webhook and limits",
    )
    async def get_settings(app_id: str) -> AppSettings:
        await existing_app(app_id)
        return _settings_of(app_id, await store.get_app_config(app_id))

    @api.patch(
        "/v1/apps/{app_id}",
        response_model=AppSettings,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(operator)],
        tags=["apps"],
        summary="Set the app's webhook URL and limits (fields left out keep their value)",
    )
    async def patch_settings(app_id: str, body: ConfigPatch) -> AppSettings:
        await existing_app(app_id)
        config = await store.get_app_config(app_id)
        webhook_url, secret = config.webhook_url, config.webhook_secret
        if "webhook_url" in body.model_fields_set:
            webhook_url = body.webhook_url or None
        hook_url = config.publish_hook_url
        if "publish_hook_url" in body.model_fields_set:
            hook_url = body.publish_hook_url or None
        if (webhook_url or hook_url) and (secret is None or body.rotate_webhook_secret):
            secret = new_webhook_secret()
        limits = AppLimits(**body.limits.model_dump()) if body.limits is not None else config.limits
        config = AppConfig(webhook_url=webhook_url, webhook_secret=secret, limits=limits, publish_hook_url=hook_url)
        await store.set_app_config(app_id, config)
        return _settings_of(app_id, config)

    @api.post(
        "/v1/tokens",
        status_code=201,
        response_model=TokenIssued,
        responses=ERROR_RESPONSES,
        tags=["tokens"],
        summary="Issue a connect token for one user",
    )
    async def issue_token(body: NewToken, app_id: AppId) -> TokenIssued:
        token = new_connect_token()
        now = time.time()
        expires_at = now + (body.ttl_s or settings.token_ttl_s)
        publish = check_patterns(body.publish or [])
        record = TokenRecord(secret_hash(token), app_id, body.user_id, expires_at, now, body.device, publish)
        await store.insert_token(record)
        return TokenIssued(
            token=token, user_id=body.user_id, expires_at=expires_at, device=body.device, publish=list(publish)
        )

    async def revoke(token: str, app_id: str) -> Response:
        token_hash = secret_hash(token)
        record = await store.get_token(token_hash, time.time())
        if record is None or record.app_id != app_id:
            raise NotFound("no such token", code="unknown_token")
        await store.delete_token(token_hash)
        await send_to_all_nodes(directory, bus, [Kick(app_id, record.user_id, token_hash, "revoked")])
        return Response(status_code=204)

    @api.post(
        "/v1/revocations",
        status_code=204,
        response_class=Response,
        responses=ERROR_RESPONSES,
        tags=["tokens"],
        summary="Revoke one token, given in the body (its connections close with 4003)",
    )
    async def revoke_token(body: Revocation, app_id: AppId) -> Response:
        return await revoke(body.token, app_id)

    @api.delete(
        "/v1/tokens/{token}",
        status_code=204,
        response_class=Response,
        responses=ERROR_RESPONSES,
        tags=["tokens"],
        deprecated=True,
        summary="Revoke one token named in the path (kept for old clients: prefer POST /v1/revocations, "
        "which keeps the token out of URLs and so out of proxy logs)",
    )
    async def revoke_token_in_path(token: str, app_id: AppId) -> Response:
        return await revoke(token, app_id)

    @api.delete(
        "/v1/users/{user_id}/tokens",
        status_code=204,
        response_class=Response,
        responses=ERROR_RESPONSES,
        tags=["tokens"],
        summary="Revoke every token of a user and close their connections (4003)",
    )
    async def revoke_user_tokens(user_id: UserIdPath, app_id: AppId) -> Response:
        check_user_id(user_id)
        await store.delete_user_tokens(app_id, user_id)
        await send_to_all_nodes(directory, bus, [Kick(app_id, user_id, None, "revoked")])
        return Response(status_code=204)

    @api.post(
        "/v1/introspect",
        response_model=Introspection,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(service)],
        tags=["internal"],  # for push nodes on the internal network; nginx does not route it
        summary="Is this connect token valid?",
    )
    async def introspect(body: Introspect) -> Introspection:
        return _introspection(await store.get_token(secret_hash(body.token), time.time()))

    @api.post(
        "/v1/introspect/batch",
        response_model=Introspections,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(service)],
        tags=["internal"],  # for push nodes on the internal network; nginx does not route it
        summary="Are these connect tokens valid? One answer per token, in order, from one store query",
    )
    async def introspect_batch(body: IntrospectBatch) -> Introspections:
        hashes = [secret_hash(token) for token in body.tokens]
        records = await store.get_tokens(hashes, time.time())
        return Introspections(results=[_introspection(records.get(token_hash)) for token_hash in hashes])

    return api
