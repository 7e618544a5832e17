"""What the client raises, so callers branch on types and codes rather than on message text.

Exception
├── HeraldAPIError    an HTTP call answered with an error: status, code, message, details
└── SubscriptionEnded the server closed a subscription for good; do not reconnect as is
    ├── Revoked       4003: the user was kicked or the token revoked
    └── TokenExpired  4001: the token expired and, being a fixed string, cannot be renewed
"""

from __future__ import annotations

from typing import Any


class HeraldAPIError(Exception):
    """An error answer of auth or collect, in Herald's one error shape."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after_s = retry_after_s  # from Retry-After on a 429


class SubscriptionEnded(Exception):
    """The server ended the subscription with a close code that forbids reconnecting as is."""

    code = 0
    default_reason = "closed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"closed by the server with {self.code}: {reason or self.default_reason}")
        self.reason = reason


class Revoked(SubscriptionEnded):
    """4003: kicked, or the token revoked. Reconnecting with the same token would be refused."""

    code = 4003
    default_reason = "revoked"


class TokenExpired(SubscriptionEnded):
    """4001 with a fixed string token: pass a function as ``token`` to have it renewed instead."""

    code = 4001
    default_reason = "token expired"
