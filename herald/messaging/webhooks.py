"""Webhooks: every event of an app POSTed to the URL its operator configured, signed and retried.

``WebhookSender.handle`` is a bus handler for the events queue (``Bus.consume_events``).
Per event it looks up the app's ``AppConfig``; without a ``webhook_url`` there is nothing
to do. Otherwise it POSTs the event's exact bus bytes, so the signature a receiver checks
is over the bytes Herald published:

    Content-Type: application/json
    X-Herald-Event: user.online
    X-Herald-Delivery: 0b7c...   one per event, the same on every retry: receivers de-duplicate on it
    X-Herald-Signature: sha256=<hex HMAC-SHA256 of the body with the app's webhook_secret>
    User-Agent: herald-webhooks

An app without a ``webhook_secret`` gets unsigned requests (no signature header) rather
than none: the URL is the operator's choice, signing is the receiver's protection.

The first attempt runs inside ``handle``; a 2xx is delivered. A network error, a timeout,
408, 429 or 5xx is worth another try, and the retries go on in a background task (with
exponential backoff and jitter, ``retry_delay``) so one dead endpoint never holds up the
queue behind it. Any other answer (3xx, other 4xx) is the receiver saying no: not retried.
At most ``max_pending`` events wait for a retry; beyond that an event is dropped and logged.

Retries live in this process only: the bus message is acknowledged once ``handle``
returns, so a restart loses the retries in flight (events are notifications; the
receiver's view is rebuilt from the HTTP API). Retries may also overtake later events:
each carries its ``ts``.

A failure to read the app's config (the store down) raises from ``handle``, so the bus
redelivers the event later; a malformed event is dropped, since redelivering it would
only block the queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import httpx

from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.model import AppConfig
from herald.ops import metrics

__all__ = ["USER_AGENT", "WebhookSender", "retry_delay", "should_retry", "sign", "verify"]

log = logging.getLogger(__name__)

USER_AGENT = "herald-webhooks"

# The faults worth another attempt: the endpoint may answer later. A malformed or
# unsupported URL (httpx.InvalidURL, UnsupportedProtocol) is an operator's mistake that
# no retry fixes, so it counts as refused.
RETRYABLE: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    TimeoutError,
)
# How long close() waits for cancelled retries to unwind.
CLOSE_TIMEOUT_S = 5.0


def sign(secret: str, body: bytes) -> str:
    """The ``X-Herald-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``body`` keyed by ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does with the header: compare in constant time, so timing leaks nothing."""
    return hmac.compare_digest(sign(secret, body), signature)


def should_retry(status: int) -> bool:
    """True for answers that may change later: 408 (timeout), 429 (slow down) and every 5xx."""
    return status in (408, 429) or 500 <= status <= 599


def retry_delay(attempt: int, *, base_s: float, max_s: float, draw: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first) before the next.

    The ceiling doubles per attempt from ``base_s`` up to ``max_s``; the delay is drawn
    between half the ceiling and the ceiling ("equal jitter"), so retries of many events
    that failed together spread out, yet the wait still grows. ``draw`` (in [0, 1))
    replaces the random draw, for tests.
    """
    # The exponent is clamped: 2.0 ** 1100 would overflow long after max_s has won.
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempt - 1, 0), 64))
    fraction = random.random() if draw is None else draw
    return ceiling / 2 + ceiling / 2 * fraction


class _Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One event on its way to one URL; the same request on every attempt."""

    app_id: str
    kind: str
    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def delivery_id(self) -> str:
        return self.headers["x-herald-delivery"]

    @property
    def where(self) -> str:
        """The URL without its query or credentials, which may carry secrets: safe to log."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class WebhookSender:
    """Turns events from the bus into signed POSTs, retried in the background when worth it."""

    def __init__(
        self,
        config_of: Callable[[str], Awaitable[AppConfig]],
        *,
        attempts: int = 6,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        timeout_s: float = 5.0,
        max_pending: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if max_pending < 0:
            raise ValueError("max_pending must not be negative")
        self._config_of = config_of
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._timeout_s = timeout_s
        self._max_pending = max_pending
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        """Events waiting for a retry (for health and tests)."""
        return len(self._pending)

    async def start(self) -> None:
        self._closed = False
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,  # a redirect is the receiver's mistake to fix, not ours to follow
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        """Abandon the retries in flight (counted as dropped), then close the HTTP client."""
        self._closed = True
        pending, self._pending = set(self._pending), set()
        if pending:
            log.warning(
                "closing with %d webhook(s) still to retry; dropped", len(pending), extra={"count": len(pending)}
            )
            metrics.webhooks.labels(outcome="dropped").inc(len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def handle(self, body: bytes) -> None:
        """Deliver one event (a bus handler): first attempt now, retries in the background."""
        if self._closed or self._client is None:
            # Raising hands the event back to the bus, which offers it to another consumer.
            raise Unavailable("the webhook sender is not running")
        parsed = _parse(body)
        if parsed is None:
            log.error("malformed event on the bus (%d bytes); dropped", len(body))
            metrics.webhooks.labels(outcome="dropped").inc()
            return
        app_id, kind = parsed
        config = await self._config_of(app_id)
        if not config.webhook_url:
            return
        delivery = _Delivery(app_id, kind, config.webhook_url, body, _headers(kind, body, config.webhook_secret))
        if self._settled(delivery, 1, await self._attempt(delivery, 1)):
            return
        if len(self._pending) >= self._max_pending:
            log.error(
                "%d webhooks already waiting for a retry; dropped %s %s",
                len(self._pending),
                kind,
                delivery.delivery_id,
                extra={"app_id": app_id},
            )
            metrics.webhooks.labels(outcome="dropped").inc()
            return
        metrics.webhooks.labels(outcome="retried").inc()
        task = asyncio.create_task(self._retry(delivery), name=f"herald-webhook:{delivery.delivery_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _retry(self, delivery: _Delivery) -> None:
        try:
            for attempt in range(2, self._attempts + 1):
                await asyncio.sleep(retry_delay(attempt - 1, base_s=self._base_delay_s, max_s=self._max_delay_s))
                if self._settled(delivery, attempt, await self._attempt(delivery, attempt)):
                    return
                metrics.webhooks.labels(outcome="retried").inc()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not an endpoint's fault: nobody awaits this task, so say it loudly here.
            log.exception("webhook %s: retry failed unexpectedly; dropped", delivery.delivery_id)
            metrics.webhooks.labels(outcome="dropped").inc()

    def _settled(self, delivery: _Delivery, attempt: int, outcome: _Outcome) -> bool:
        """Count and log an event's end (delivered, refused, out of attempts); False while it may be retried."""
        extra = {"app_id": delivery.app_id}
        if outcome is _Outcome.DELIVERED:
            metrics.webhooks.labels(outcome="delivered").inc()
            return True
        if outcome is _Outcome.REFUSED:
            metrics.webhooks.labels(outcome="failed").inc()
            return True
        if attempt >= self._attempts:
            log.error(
                "webhook %s %s to %s: gave up after %d attempts",
                delivery.kind,
                delivery.delivery_id,
                delivery.where,
                attempt,
                extra=extra,
            )
            metrics.webhooks.labels(outcome="failed").inc()
            return True
        return False  # the caller counts "retried" once the retry is sure to happen

    async def _attempt(self, delivery: _Delivery, attempt: int) -> _Outcome:
        client = self._client
        if client is None:
            # Closed while the app's config was read: the bus redelivers the event.
            raise Unavailable("the webhook sender closed")
        extra = {"app_id": delivery.app_id}
        try:
            # httpx bounds each phase; this bounds the whole request (a receiver trickling bytes).
            async with asyncio.timeout(self._timeout_s):
                # Streamed and never read: a receiver's answer body is not worth the memory.
                async with client.stream("POST", delivery.url, content=delivery.body, headers=delivery.headers) as r:
                    status = r.status_code
        except RETRYABLE as exc:
            log.warning(
                "webhook %s to %s: attempt %d failed (%r)",
                delivery.delivery_id,
                delivery.where,
                attempt,
                exc,
                extra=extra,
            )
            return _Outcome.RETRY
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.error("webhook %s to %s: cannot send (%r)", delivery.delivery_id, delivery.where, exc, extra=extra)
            return _Outcome.REFUSED
        if 200 <= status <= 299:
            return _Outcome.DELIVERED
        if should_retry(status):
            log.warning(
                "webhook %s to %s: attempt %d answered %d",
                delivery.delivery_id,
                delivery.where,
                attempt,
                status,
                extra=extra,
            )
            return _Outcome.RETRY
        log.error(
            "webhook %s to %s: refused with %d; not retried", delivery.delivery_id, delivery.where, status, extra=extra
        )
        return _Outcome.REFUSED


def _parse(body: bytes) -> tuple[str, str] | None:
    """The event's app id and type, or None when the body is not an event."""
    try:
        value: Any = codec.loads(body)
    except codec.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    app_id, kind = value.get("app_id"), value.get("type")
    if not (isinstance(app_id, str) and app_id and isinstance(kind, str) and kind):
        return None
    if not (kind.isascii() and kind.isprintable()):
        return None  # it goes into a header
    return app_id, kind


def _headers(kind: str, body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "x-herald-event": kind,
        "x-herald-delivery": str(uuid.uuid4()),
    }
    if secret:
        headers["x-herald-signature"] = sign(secret, body)
    return headers
