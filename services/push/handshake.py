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
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values and values[0] else None


def device_from_request(path: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get("device")
    return values[0][:64] if values and values[0] else None


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """Answer ``herald`` when offered; echo a lone token, since a browser fails a handshake
    whose answer names no protocol it offered."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    for protocol in offered:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol
    return None
