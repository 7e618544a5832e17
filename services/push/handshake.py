"""Where a client's connect token comes from, without any socket.

Browsers cannot set headers on a WebSocket, so besides ``Authorization: Bearer`` a token
may come as a subprotocol (``new WebSocket(url, ["herald", token])``) or as ``?token=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from herald.core.credentials import bearer

SUBPROTOCOL = "herald"
TOKEN_PREFIX = "ht_"


@dataclass(frozen=True, slots=True)
class Identity:
    """What auth says a valid connect token stands for."""

    app_id: str
    user_id: str
    expires_at: float  # the token's exp, epoch seconds
    device: str | None = None
    publish: tuple[str, ...] = ()


def offered_subprotocols(header: str | None) -> list[str]:
    if not header:
        return []
    return [item.strip() for item in header.split(",") if item.strip()]


def token_from_request(path: str, authorization: str | None, subprotocols: Sequence[str]) -> str | None:
    """The first token found in the header, then the subprotocols, then the query string."""
    token = bearer(authorization)
    if token:
        return token
    for protocol in subprotocols:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol
    return query_value(path, "token")


def device_from_request(path: str) -> str | None:
    device = query_value(path, "device")
    return device[:64] if device else None


def request_path(target: str) -> str:
    """The path of a request target, as ``urlsplit`` reads it. Every handshake asks, so the
    usual origin-form target (``/ws?token=...``) is split by hand; anything else (an
    absolute-form target, ``//`` and its netloc) goes to ``urlsplit``."""
    if _origin_form(target):
        return target.partition("#")[0].partition("?")[0]
    return urlsplit(target).path


def query_value(target: str, name: str) -> str | None:
    """The first non-empty value of ``name`` in the target's query string, as ``parse_qs``
    reads it. A query without escapes (``%``, ``+``) is split by hand: ``parse_qs`` and
    ``urlsplit`` were a few percent of a push node's CPU per handshake."""
    query = target.partition("#")[0].partition("?")[2] if _origin_form(target) else urlsplit(target).query
    if not query:
        return None
    if "%" in query or "+" in query:
        values = parse_qs(query).get(name)
        return values[0] if values else None
    for field in query.split("&"):
        key, equals, value = field.partition("=")
        if key == name and equals and value:
            return value
    return None


def _origin_form(target: str) -> bool:
    """``/path?query``: what ``urlsplit`` reads as path, query and fragment, and nothing else
    (a leading ``//`` starts a netloc)."""
    return target.startswith("/") and not target.startswith("//")


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """Answer ``herald`` when offered; echo a lone token, since a browser fails a handshake
    whose answer names no protocol it offered."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    for protocol in offered:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol
    return None
