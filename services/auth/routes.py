"""auth's endpoints, declared at module level: each turns HTTP into one ``AuthService`` call.

Three routers by who may call them; ``services/auth/app.py`` includes each behind its
credential: the operator token (apps), an app's API key (tokens), the service token
(introspection, for push nodes on the internal network; nginx does not route it).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from herald.messaging.apikeys import AppId
from herald.services.auth.models import (
    AppCreated,
    AppSettings,
    ConfigPatch,
    Introspect,
    IntrospectBatch,
    Introspection,
    Introspections,
    KeyRotated,
    NewApp,
    NewToken,
    Revocation,
    TokenIssued,
    UserIdPath,
)
from herald.services.auth.service import AuthService
from herald.web.api import ERROR_RESPONSES


async def auth_service(request: Request) -> AuthService:
    """The app's ``AuthService``, kept in ``app.state.auth`` by ``create_app``.
    (async: FastAPI would run a plain function on a worker thread, per request)."""
    service: AuthService = request.app.state.auth
    return service


Auth = Annotated[AuthService, Depends(auth_service)]

operator_routes = APIRouter()
app_routes = APIRouter()
service_routes = APIRouter()


@operator_routes.post(
    "/v1/apps",
    status_code=201,
    response_model=AppCreated,
    responses=ERROR_RESPONSES,
    tags=["apps"],
    summary="Create an app (tenant)",
)
async def create_app_(body: NewApp, auth: Auth) -> AppCreated:
    return await auth.create_app(body.name)


@operator_routes.post(
    "/v1/apps/{app_id}/keys",
    status_code=201,
    response_model=KeyRotated,
    responses=ERROR_RESPONSES,
    tags=["apps"],
    summary="Rotate the app's key",
)
async def rotate_key(app_id: str, auth: Auth) -> KeyRotated:
    return await auth.rotate_key(app_id)


@operator_routes.get(
    "/v1/apps/{app_id}",
    response_model=AppSettings,
    responses=ERROR_RESPONSES,
    tags=["apps"],
    summary="The app's webhook and limits",
)
async def get_settings(app_id: str, auth: Auth) -> AppSettings:
    return await auth.settings(app_id)


@operator_routes.patch(
    "/v1/apps/{app_id}",
    response_model=AppSettings,
    responses=ERROR_RESPONSES,
    tags=["apps"],
    summary="Set the app's webhook URL and limits (fields left out keep their value)",
)
async def patch_settings(app_id: str, body: ConfigPatch, auth: Auth) -> AppSettings:
    return await auth.configure(app_id, body)


@app_routes.post(
    "/v1/tokens",
    status_code=201,
    response_model=TokenIssued,
    responses=ERROR_RESPONSES,
    tags=["tokens"],
    summary="Issue a connect token for one user",
)
async def issue_token(body: NewToken, app_id: AppId, auth: Auth) -> TokenIssued:
    return await auth.issue_token(app_id, body)


@app_routes.post(
    "/v1/revocations",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    tags=["tokens"],
    summary="Revoke one token, given in the body (its connections close with 4003)",
)
async def revoke_token(body: Revocation, app_id: AppId, auth: Auth) -> Response:
    await auth.revoke(app_id, body.token)
    return Response(status_code=204)


@app_routes.delete(
    "/v1/tokens/{token}",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    tags=["tokens"],
    deprecated=True,
    summary="Revoke one token named in the path (kept for old clients: prefer POST /v1/revocations, "
    "which keeps the token out of URLs and so out of proxy logs)",
)
async def revoke_token_in_path(token: str, app_id: AppId, auth: Auth) -> Response:
    await auth.revoke(app_id, token)
    return Response(status_code=204)


@app_routes.delete(
    "/v1/users/{user_id}/tokens",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    tags=["tokens"],
    summary="Revoke every token of a user and close their connections (4003)",
)
async def revoke_user_tokens(user_id: UserIdPath, app_id: AppId, auth: Auth) -> Response:
    await auth.revoke_user(app_id, user_id)
    return Response(status_code=204)


@service_routes.post(
    "/v1/introspect",
    response_model=Introspection,
    responses=ERROR_RESPONSES,
    tags=["internal"],
    summary="Is this connect token valid?",
)
async def introspect(body: Introspect, auth: Auth) -> Introspection:
    return await auth.introspect(body.token)


@service_routes.post(
    "/v1/introspect/batch",
    response_model=Introspections,
    responses=ERROR_RESPONSES,
    tags=["internal"],
    summary="Are these connect tokens valid? One answer per token, in order, from one store query",
)
async def introspect_batch(body: IntrospectBatch, auth: Auth) -> Introspections:
    return Introspections(results=await auth.introspect_many(body.tokens))
