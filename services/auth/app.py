"""auth's HTTP API: apps and their keys (operator), connect tokens (apps), introspection (services)."""

import time
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from herald.apikeys import AppKeys, issue_api_key
from herald.credentials import new_app_id, new_connect_token, secret_hash
from herald.errors import NotFound
from herald.http import ERROR_RESPONSES, create_api, require_secret
from herald.model import USER_ID_RE, App, TokenRecord
from herald.settings import Settings
from herald.store.base import Store

MAX_TOKEN_TTL_S = 30 * 86400


class NewApp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


class AppCreated(BaseModel):
    app_id: str
    name: str
    api_key: str = Field(description="shown once; only its hash is stored")


class KeyRotated(BaseModel):
    app_id: str
    api_key: str


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(pattern=USER_ID_RE.pattern, min_length=1, max_length=128)
    ttl_s: int | None = Field(default=None, ge=1, le=MAX_TOKEN_TTL_S)


class TokenIssued(BaseModel):
    token: str
    user_id: str
    expires_at: float


class Introspect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=512)


class Introspection(BaseModel):
    active: bool
    app_id: str | None = None
    user_id: str | None = None
    exp: float | None = None


def create_app(settings: Settings, store: Store) -> FastAPI:
    api = create_api("Herald auth", "Apps, API keys and user connect tokens.", checks=[store.ping])
    keys = AppKeys(store)
    current_app = keys.dependency()
    AppId = Annotated[str, Depends(current_app)]

    def operator(request: Request) -> None:
        require_secret(request, settings.admin_token, "operator (HERALD_ADMIN_TOKEN)")

    def service(request: Request) -> None:
        require_secret(request, settings.service_token, "service (HERALD_SERVICE_TOKEN)")

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
        await store.insert_token(TokenRecord(secret_hash(token), app_id, body.user_id, expires_at, now))
        return TokenIssued(token=token, user_id=body.user_id, expires_at=expires_at)

    @api.delete(
        "/v1/tokens/{token}",
        status_code=204,
        response_class=Response,
        responses=ERROR_RESPONSES,
        tags=["tokens"],
        summary="Revoke one token",
    )
    async def revoke_token(token: str, app_id: AppId) -> Response:
        token_hash = secret_hash(token)
        record = await store.get_token(token_hash, time.time())
        if record is None or record.app_id != app_id:
            raise NotFound("no such token", code="unknown_token")
        await store.delete_token(token_hash)
        return Response(status_code=204)

    @api.post(
        "/v1/introspect",
        response_model=Introspection,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(service)],
        tags=["tokens"],
        summary="Is this connect token valid?",
    )
    async def introspect(body: Introspect) -> Introspection:
        record = await store.get_token(secret_hash(body.token), time.time())
        if record is None:
            return Introspection(active=False)
        return Introspection(active=True, app_id=record.app_id, user_id=record.user_id, exp=record.expires_at)

    return api
