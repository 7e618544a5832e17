"""The ASGI middlewares every Herald HTTP API runs: security headers, response counts, and
the body limit that refuses an oversized request before it is buffered."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.core import codec
from herald.core.errors import PayloadTooLarge
from herald.ops import metrics
from herald.web import csp


class SecurityHeaders:
    """``nosniff`` and ``no-referrer`` on every answer; HTML (the API docs) also gets a
    Content-Security-Policy with ``frame-ancestors 'none'`` (``herald.web.csp``), computed
    from the page itself, which is therefore held until its last byte (a few KB)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        held: list[bytes] = []

        async def secured(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *_encoded(csp.SECURITY_HEADERS)]
                message = {**message, "headers": headers}
                if not _is_html(headers):
                    await send(message)
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            page = b"".join(held)
            extra = [("Content-Security-Policy", csp.for_api_docs(page)), *csp.FRAME_HEADERS]
            await send({**start, "headers": [*start["headers"], *_encoded(extra)]})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, secured)


def _encoded(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def _is_html(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-type" and value.startswith(b"text/html") for name, value in headers)


class CountResponses:
    """Count answered requests by status class, without touching bodies (pure ASGI, so
    streaming and the body limit behave as before)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self._by_status = {
            status: metrics.http_requests.labels(service, status) for status in ("2xx", "3xx", "4xx", "5xx")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                counter = self._by_status.get(f"{message['status'] // 100}xx")
                if counter is not None:
                    counter.inc()
            await send(message)

        await self.app(scope, receive, counted)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes before they are buffered (413).

    A declared ``Content-Length`` over the limit is answered at once. A body that streams
    (chunked) is read up to the limit; past it the app is told the client left, whatever it
    answers to that is dropped, and the caller gets the same 413 (FastAPI would otherwise
    answer a body it could not read with a 400)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_too_large(send, self.limit)
                return
        received = 0
        too_large = started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's answer to a body it never got whole; the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await _send_too_large(send, self.limit)


async def _send_too_large(send: Send, limit: int) -> None:
    body = codec.dumps(PayloadTooLarge(f"request body over {limit} bytes").to_body())
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_encoded(csp.SECURITY_HEADERS),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
