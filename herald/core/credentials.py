"""Secrets Herald hands out, and how it checks them.

API keys and connect tokens are random and opaque; only their SHA-256 is stored, so a
leaked database leaks no credential. Operator and service tokens are compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# What ``new_connect_token`` makes: ``ht_`` and the URL-safe base64 of 32 random bytes
# (43 characters, no padding). Anything else was not issued by auth.
CONNECT_TOKEN_RE = re.compile(r"ht_[A-Za-z0-9_-]{43}")


def new_app_id() -> str:
    return f"app_{secrets.token_hex(8)}"


def new_api_key() -> str:
    return f"hk_{secrets.token_urlsafe(32)}"


def new_connect_token() -> str:
    """URL-safe and made of RFC 7230 token characters, so it fits ``Sec-WebSocket-Protocol``."""
    return f"ht_{secrets.token_urlsafe(32)}"


def is_connect_token(candidate: str) -> bool:
    """Shaped like a token auth issues: a push node refuses anything else without asking auth."""
    return CONNECT_TOKEN_RE.fullmatch(candidate) is not None


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <x>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def new_webhook_secret() -> str:
    """The HMAC key of an app's webhooks; shown to the operator, who gives it to the receiver."""
    return f"whsec_{secrets.token_urlsafe(32)}"
