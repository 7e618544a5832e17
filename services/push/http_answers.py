"""The push node's plain HTTP answers: JSON and errors, the pages it serves with their
security headers, and request targets as they may be logged."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from herald.core import codec
from herald.web import csp

# Served on the WebSocket port: the browser client (its one copy lives in clients/js) and
# the chat page built on it.
_ROOT = Path(__file__).resolve().parents[2]
_PAGES = Path(__file__).resolve().parent / "static"
STATIC_FILES: dict[str, tuple[Path, str]] = {
    "/herald.js": (_ROOT / "clients" / "js" / "herald.js", "text/javascript; charset=utf-8"),
    "/chat": (_PAGES / "chat.html", "text/html; charset=utf-8"),
    "/ops": (_PAGES / "ops.html", "text/html; charset=utf-8"),
    "/": (_PAGES / "console.html", "text/html; charset=utf-8"),
}


# Where each page may connect. The console calls auth and collect wherever its user points
# it (other ports under `herald dev`, other hosts) and opens the WebSocket there; the chat
# and ops pages only talk to the node that served them.
PAGE_CONNECT_SRC = {
    "/": "'self' http: https: ws: wss:",
    "/chat": "'self' ws: wss:",
    "/ops": "'self'",
}


def page_headers(path: str, body: bytes) -> list[tuple[str, str]]:
    """A page's Content-Security-Policy (its own inline blocks by hash, no framing); none
    for what is not a page (``herald.js``)."""
    connect_src = PAGE_CONNECT_SRC.get(path)
    if connect_src is None:
        return []
    return [("Content-Security-Policy", csp.for_page(body, connect_src)), *csp.FRAME_HEADERS]


def http_response(status: int, body: bytes, content_type: str, extra: Sequence[tuple[str, str]] = ()) -> Response:
    # The WebSocket server closes the connection after any answer but an upgrade: saying so
    # keeps HTTP clients from sending their next request on a socket about to close.
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *csp.SECURITY_HEADERS,
            *extra,
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


def json_response(status: int, body: dict[str, Any]) -> Response:
    return http_response(status, codec.dumps(body), "application/json")


def path_only(target: str) -> str:
    """A request target without its query string, the only form of it that is logged: the
    query may carry a connect token (``?token=``), and logs travel further than secrets may."""
    return urlsplit(target).path


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


def static_answer(path: str) -> Response:
    """One of ``STATIC_FILES``, read at each request (the pages are small; a changed file
    is served at once in development)."""
    file, content_type = STATIC_FILES[path]
    try:
        body = file.read_bytes()
    except OSError:
        return error_response(404, "not_found", f"{path} is not installed with this node")
    return http_response(200, body, content_type, page_headers(path, body))
