"""What every Herald HTTP API shares: the error shape, credentials, health and body limits.

Whatever goes wrong, the caller gets ``{"error": {"code", "message", "details"?}}`` with a
proper status, and never a stack trace: bad input is 4xx, a dependency down is 503, and
only a bug is 500 (logged with its traceback, answered without it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from herald.core.credentials import bearer, same_secret
from herald.core.errors import Forbidden, HeraldError, TooManyRequests, Unauthorized, Unavailable
from herald.ops import metrics
from herald.ops.readiness import NOT_READY, check_name, run_check
from herald.web.middleware import CountResponses, SecurityHeaders
from herald.web.throttle import FailureThrottle

log = logging.getLogger("herald.http")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning}
    for status, meaning in (
        (400, "bad input"),
        (401, "missing or unknown credential"),
        (403, "credential not allowed here"),
        (404, "not found"),
        (409, "conflict"),
        (413, "too large"),
        (422, "body or parameters fail validation"),
        (429, "a rate limit; the Retry-After header says when to try again"),
        (503, "a dependency is unavailable; retry"),
    )
}


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Request bodies are validated strictly, as their schema reads: "5" is not a number, false
# is not 0 and "no" is not false. JSON has one number type, though: 5.0 is the integer 5.
STRICT_BODY = ConfigDict(extra="forbid", strict=True)


# What makes an integer body field also take 5.0 for 5. It goes after the bounds, in the
# same Annotated: ``Annotated[int, Field(ge=0, le=9), INTEGRAL]``. (Bounds on the field
# itself, or after this validator, would be dropped from the schema by pydantic.)
INTEGRAL = BeforeValidator(_integral)


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in exc.errors():
        details.append({"loc": [str(part) for part in item.get("loc", ())], "msg": item.get("msg", "")})
    return details[:50]


def install_error_handlers(app: FastAPI, service: str = "api") -> None:
    """Answer every failure in Herald's error shape, counting it by its code."""
    count = metrics.errors.labels

    @app.exception_handler(HeraldError)
    async def herald_error(_: Request, exc: HeraldError) -> JSONResponse:
        return herald_error_response(service, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        count(service, "invalid_request").inc()
        return error_response(422, "invalid_request", "the request does not match the schema", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        count(service, code).inc()
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return response

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return crash_response(service, request.scope, exc)


def herald_error_response(service: str, exc: HeraldError) -> JSONResponse:
    """A ``HeraldError`` as its answer (a 429 says when to retry), counted by its code."""
    metrics.errors.labels(service, exc.code).inc()
    headers = None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def crash_response(service: str, scope: Scope, exc: Exception) -> JSONResponse:
    """A bug's 500: logged with its traceback, answered without it."""
    # The route's template (/v1/tokens/{token}), never the path or its query string:
    # those may carry a token, and logs travel further than the request did.
    log.error("unhandled error on %s %s", scope.get("method", ""), route_template(scope), exc_info=exc)
    metrics.errors.labels(service, "internal").inc()
    return error_response(500, "internal", "internal error; it has been logged")


def route_template(scope: Scope) -> str:
    """The matched route's path template, safe to log; ``(no route)`` before routing."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(no route)"


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route takes at this path. Starlette's own 405 names only the first
    route that matched the path, so a path served by two routes (GET and PATCH) would
    advertise one; RFC 9110 wants them all in ``Allow``."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, Route) and route.methods:
            methods.update(route.methods)
    return sorted(methods)


ReadinessCheck = Callable[[], Awaitable[None]]


class HeraldApi(FastAPI):
    """A FastAPI app that may serve a few hot endpoints ahead of its own middleware and
    routing (``herald.web.hot``): an ASGI app per ``(method, path)`` in ``hot_routes``.

    Everything else, and whatever a hot endpoint hands on (``routed``), takes FastAPI's
    way, where its documented route answers.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.service = str(options.get("title", "")).removeprefix("Herald ").lower()
        self.hot_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot_routes:
            hot = self.hot_routes.get((scope["method"], scope["path"]))
            if hot is not None:
                await hot(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request as FastAPI serves it, hot routes aside."""
        await super().__call__(scope, receive, send)


class Readiness(BaseModel):
    status: str
    degraded: list[str] = []


def create_api(
    title: str,
    description: str,
    checks: Sequence[ReadinessCheck] = (),
    soft_checks: Mapping[str, ReadinessCheck] | None = None,
) -> HeraldApi:
    """A FastAPI app with Herald's error shape, ``/healthz``, ``/readyz`` and ``/metrics``.

    ``checks`` are what the service cannot work without: one failing makes ``/readyz`` 503,
    so a load balancer stops sending it requests. ``soft_checks`` are what it works around
    (collect still accepts with RabbitMQ down; auth still issues tokens with Redis down):
    a failing one is listed under ``degraded`` and the service stays ready."""
    # FastAPI's own OpenTelemetry hooks off: Herald exports Prometheus metrics, and with
    # them on every request looked up the global tracer provider in os.environ (about 3%
    # of collect's time per single-message request).
    app = HeraldApi(
        title=title,
        description=description,
        version="1",
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    service = app.service
    install_error_handlers(app, service)
    app.add_middleware(CountResponses, service=service)
    app.add_middleware(SecurityHeaders)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics of this process",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
    )
    async def metrics_text() -> Response:
        text, content_type = metrics.exposition()
        return Response(text, media_type=content_type)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Every dependency answers",
        response_model=Readiness,
        responses={503: ERROR_RESPONSES[503]},
    )
    async def readyz() -> Readiness:
        for check in checks:
            if not await run_check(check, check_name(check)):
                raise Unavailable(NOT_READY)
        degraded = [name for name, check in (soft_checks or {}).items() if not await run_check(check, name)]
        return Readiness(status="degraded" if degraded else "ready", degraded=degraded)

    return app


def require_secret(request: Request, expected: str, who: str, throttle: FailureThrottle | None = None) -> None:
    """Check a fixed credential (operator or service token) from the Authorization header;
    with ``throttle``, a source that keeps sending wrong ones is refused for a while (429)."""
    given = bearer(request.headers.get("authorization"))
    if given is None:
        raise Unauthorized(f"send the {who} token as `Authorization: Bearer <token>`", code="missing_credential")
    source = request.client.host if request.client is not None else ""
    if throttle is not None:
        wait_s = throttle.blocked_for(source)
        if wait_s > 0:
            raise TooManyRequests(
                f"too many wrong {who} tokens from this address; try again later",
                retry_after_s=wait_s,
                code="too_many_failures",
            )
    if not same_secret(given, expected):
        if throttle is not None:
            throttle.failed(source)
        raise Forbidden(f"this is not the {who} token", code="bad_credential")


def secret_dependency(
    expected: str, who: str, scheme_name: str, throttle: FailureThrottle | None = None
) -> Callable[..., Awaitable[None]]:
    """A dependency that checks a fixed credential like ``require_secret`` (failures
    throttled per source, ``herald.web.throttle``) and declares it in the OpenAPI document
    as its own bearer scheme, so clients and fuzzers know which token an operation takes.
    ``throttle``: one shared with a hot route checking the same credential.
    It is async though it awaits nothing: FastAPI runs a plain function on a worker thread, and
    that hand-off was a sixth of auth's CPU per introspection request."""
    declared = Security(HTTPBearer(auto_error=False, scheme_name=scheme_name, description=f"the {who} token"))
    failures = throttle if throttle is not None else FailureThrottle()

    async def check(request: Request, _: HTTPAuthorizationCredentials | None = declared) -> None:
        require_secret(request, expected, who, failures)

    return check
