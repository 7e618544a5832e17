"""Herald's error types, one hierarchy for every service.

    HeraldError                  carries a stable ``code``, an HTTP status and optional details
    ├── ConfigError              a HERALD_* variable is missing or malformed (start-up stops)
    ├── BadRequest          400  the caller sent something we cannot accept
    │   └── PayloadTooLarge 413
    ├── Unauthorized        401  no credential, or an unknown / expired one
    ├── Forbidden           403  a valid credential that may not do this
    ├── NotFound            404
    ├── Conflict            409
    ├── TooManyRequests     429  a rate limit; ``retry_after_s`` says when to try again
    └── Unavailable         503  a dependency (store, bus) is down: retry later

Handlers turn any ``HeraldError`` into ``{"error": {"code", "message", "details"}}``
with its status, so a client always sees the same shape whichever service answered.
Adapters raise ``Unavailable`` only for faults worth retrying; anything else is a bug
and surfaces as such.
"""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class ConfigError(HeraldError):
    code = "config"


class BadRequest(HeraldError):
    status = 400
    code = "bad_request"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class Unauthorized(HeraldError):
    status = 401
    code = "unauthorized"


class Forbidden(HeraldError):
    status = 403
    code = "forbidden"


class NotFound(HeraldError):
    status = 404
    code = "not_found"


class Conflict(HeraldError):
    status = 409
    code = "conflict"


class TooManyRequests(HeraldError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after_s = retry_after_s


class Unavailable(HeraldError):
    status = 503
    code = "unavailable"
