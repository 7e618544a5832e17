"""A hot endpoint: served ahead of FastAPI's middleware, routing, dependencies and
pydantic, for the one request shape that makes most of a service's traffic.

FastAPI's stack costs the same per request whatever the request does: eight layers of
middleware (error handling, telemetry, body limits, exception handlers, exit stacks,
Herald's security headers and response counts), the router's walk, the dependency
solver, pydantic's validation. For collect's single-message send that was more than half
of its CPU per request. A ``HotRoute`` reads the body itself and gives it to a handler
that either answers (the JSON body of a success) or hands the request on, with the body
it read, to the FastAPI route documented for the same path.

What the stack gives every answer the hot route gives its own: the security headers, the
response counts, Herald's error shape for a ``HeraldError`` (with ``Retry-After`` on a
429) and a logged 500 for a bug, through the same functions as the exception handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive, Scope, Send

from herald.core.errors import HeraldError
from herald.ops import metrics
from herald.web import csp
from herald.web.api import HeraldApi, crash_response, herald_error_response

# Answers the request from its scope and body (the JSON body of a success), or None to
# hand it to the documented route; raises a ``HeraldError`` to refuse it.
HotHandler = Callable[[Scope, bytes], Awaitable[bytes | None]]

_SECURITY = [(name.lower().encode(), value.encode()) for name, value in csp.SECURITY_HEADERS]


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client left (or ``BodyLimit`` cut the body
    off, and answers the 413 itself)."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def is_json(scope: Scope) -> bool:
    """A Content-Type FastAPI reads as JSON, in its common spellings (others take its route)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value == b"application/json" or value.startswith(b"application/json;"))
    return False


def bearer_key(scope: Scope) -> str | None:
    """The credential of ``Authorization: Bearer <x>``, read as FastAPI's ``HTTPBearer`` reads it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            return key if scheme.lower() == "bearer" and key else None
    return None


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read handed out once more, for the documented route."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class HotRoute:
    """The ASGI app of one hot endpoint, answering ``status`` with what ``handler`` returns."""

    def __init__(self, api: HeraldApi, path: str, status: int, handler: HotHandler) -> None:
        self._api = api
        self.path = path  # what a crash's log line names (``route_template``)
        self._status = status
        self._handler = handler
        self._counted = {s: metrics.http_requests.labels(api.service, s) for s in ("2xx", "4xx", "5xx")}
        # Requests handed on to the documented route: the invalid ones, and valid ones the
        # handler does not read itself.
        self.handed_on = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        try:
            answer = await self._handler(scope, body)
        except HeraldError as exc:
            response = herald_error_response(self._api.service, exc)
        except Exception as exc:
            response = crash_response(self._api.service, {**scope, "route": self}, exc)
        else:
            if answer is None:
                self.handed_on += 1
                await self._api.routed(scope, replaying(body, receive), send)
                return
            self._counted[f"{self._status // 100}xx"].inc()
            headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": self._status, "headers": headers + _SECURITY})
            await send({"type": "http.response.body", "body": answer})
            return
        self._counted[f"{response.status_code // 100}xx"].inc()

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_SECURITY]}
            await send(message)

        await response(scope, receive, secured)


def add_hot_route(api: HeraldApi, method: str, path: str, status: int, handler: HotHandler) -> HotRoute:
    """Serve ``method path`` by ``handler`` ahead of FastAPI; its FastAPI route (declared
    as usual, for the OpenAPI document) answers what the handler hands on."""
    route = api.hot_routes[(method, path)] = HotRoute(api, path, status, handler)
    return route
