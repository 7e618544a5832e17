"""Webhooks: every event of an app POSTed to the URL its operator configured, signed and retried.

``WebhookSender.handle`` is a bus handler for the events queue (``Bus.consume_events``)
and ``handle_retry`` one for the retries lane (``Bus.consume_retries``). Per event it looks
up the app's ``AppConfig``; without a ``webhook_url`` there is nothing to do. Otherwise it
POSTs the event's exact bus bytes:

    Content-Type: application/json
    X-Herald-Event: user.online
    X-Herald-Delivery: 0b7c...          one per event, the same on every retry: receivers de-duplicate on it
    X-Herald-Timestamp: 1767225600      when this attempt was signed (Unix seconds)
    X-Herald-Signature: t=1767225600,v1=<hex HMAC-SHA256 of "1767225600." + body, keyed by the webhook_secret>
    User-Agent: herald-webhooks

Signing the timestamp with the body (the scheme of Stripe and Svix) stops replays: a
receiver recomputes the HMAC over ``t`` + ``.`` + the raw body, compares in constant time,
and refuses a ``t`` further than its tolerance (five minutes is usual) from its clock, so a
captured request is worthless soon after. ``verify`` does exactly that; a receiver in
another language follows its five lines. Each attempt is signed afresh. An app without a
``webhook_secret`` gets unsigned requests (no signature headers) rather than none: the URL
is the operator's choice, signing is the receiver's protection. The publish hook of push
nodes is signed the same way (``signature_headers``).

The first attempt runs inside ``handle``; a 2xx is delivered. A network error, a timeout,
408, 429 or 5xx is worth another try: the retry goes to the bus's retries lane with its
delay (exponential backoff with jitter, ``retry_delay``) and comes back to whichever
dispatch worker is running then, so a retry outlives a deploy or a crash of the process
that scheduled it (standalone keeps its retries in memory: ``MemoryBus``). One dead
endpoint never holds up the events behind it. Any other answer (3xx, other 4xx) is the
receiver saying no: not retried. Retries may overtake later events: each carries its ``ts``.

A failure to read the app's config (the store down) or to schedule the retry (the broker
down) raises, so the bus hands the event or retry back later and the attempt is made
again (with the same delivery id: receivers de-duplicate). A malformed event is dropped,
since redelivering it would only block the queue; a malformed retry envelope raises and is
parked in the dead letters after the delivery limit.

With ``block_private`` (``HERALD_WEBHOOK_BLOCK_PRIVATE``), URLs whose host is or resolves
to a private, loopback or link-local address are refused (``herald.messaging.egress``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import httpx

from herald.core import codec, retries
from herald.core.errors import Unavailable
from herald.core.model import AppConfig
from herald.messaging.egress import PublicOnly
from herald.ops import metrics

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "USER_AGENT",
    "WebhookSender",
    "retry_delay",
    "should_retry",
    "sign",
    "signature_headers",
    "verify",
]

log = logging.getLogger(__name__)

USER_AGENT = "herald-webhooks"
SIGNATURE_HEADER = "x-herald-signature"
TIMESTAMP_HEADER = "x-herald-timestamp"
# How far a signature's timestamp may be from the receiver's clock by default.
TOLERANCE_S = 300

# The faults worth another attempt: the endpoint may answer later. A malformed or
# unsupported URL (httpx.InvalidURL, UnsupportedProtocol) is an operator's mistake that
# no retry fixes, so it counts as refused, as does a refused private address.
RETRYABLE: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    TimeoutError,
)

RetryLater = Callable[[bytes, float], Awaitable[None]]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Herald-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that sign ``body`` now: timestamp and signature."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, body, timestamp)}


def verify(
    secret: str, body: bytes, signature: str, *, tolerance_s: float = TOLERANCE_S, now: float | None = None
) -> bool:
    """What a receiver does with the ``X-Herald-Signature`` header: take ``t`` and every
    ``v1`` from it, refuse a ``t`` more than ``tolerance_s`` from now (a replay), recompute
    the HMAC over ``t.`` + the raw body and compare in constant time (several ``v1`` may
    be present while a secret is being rotated)."""
    fields: dict[str, list[str]] = {}
    for part in signature.split(","):
        key, equals, value = part.strip().partition("=")
        if equals:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


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


def delivery_id(app_id: str, body: bytes) -> str:
    """The event's delivery id, derived from its bytes: the same on every attempt, even
    when the event itself is handed out again by the bus after a failure."""
    return str(uuid.UUID(bytes=hashlib.sha256(app_id.encode() + b"\0" + body).digest()[:16]))


class _Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One event on its way to one URL; the same bytes and id on every attempt."""

    app_id: str
    kind: str
    url: str
    body: bytes
    delivery_id: str
    secret: str | None

    def headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "x-herald-event": self.kind,
            "x-herald-delivery": self.delivery_id,
        }
        if self.secret:
            headers.update(signature_headers(self.secret, self.body))
        return headers

    @property
    def where(self) -> str:
        """The URL without its query or credentials, which may carry secrets: safe to log."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class WebhookSender:
    """Turns events from the bus into signed POSTs, with retries waiting in the bus."""

    def __init__(
        self,
        config_of: Callable[[str], Awaitable[AppConfig]],
        retry_later: RetryLater,
        *,
        attempts: int = 6,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        block_private: bool = False,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._config_of = config_of
        self._retry_later = retry_later
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._block_private = block_private
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    async def start(self) -> None:
        self._closed = False
        transport = self._transport
        if self._block_private:
            transport = PublicOnly(transport)
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,  # a redirect is the receiver's mistake to fix, not ours to follow
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        """Close the HTTP client. Retries already scheduled wait in the bus for the next sender."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def handle(self, body: bytes) -> None:
        """Deliver one event from the events queue (its first attempt)."""
        self._check_running()
        parsed = _parse(body)
        if parsed is None:
            log.error("malformed event on the bus (%d bytes); dropped", len(body))
            metrics.webhooks.labels(outcome="dropped").inc()
            return
        app_id, kind = parsed
        await self._deliver(app_id, kind, body, delivery_id(app_id, body), 1)

    async def handle_retry(self, envelope: bytes) -> None:
        """Make the attempt a retry envelope from the retries lane is due for."""
        self._check_running()
        retry = retries.decode(envelope)  # ValueError: parked by the bus after the delivery limit
        parsed = _parse(retry.body)
        if parsed is None:
            raise ValueError(f"a retry envelope around a malformed event ({len(retry.body)} bytes)")
        app_id, kind = parsed
        await self._deliver(app_id, kind, retry.body, retry.delivery_id, retry.attempt)

    def _check_running(self) -> None:
        if self._closed or self._client is None:
            # Raising hands the event back to the bus, which offers it to another consumer.
            raise Unavailable("the webhook sender is not running")

    async def _deliver(self, app_id: str, kind: str, body: bytes, delivery: str, attempt: int) -> None:
        config = await self._config_of(app_id)
        if not config.webhook_url:
            if attempt > 1:
                log.info("webhook %s: the app has no webhook URL any more; retry dropped", delivery)
                metrics.webhooks.labels(outcome="dropped").inc()
            return
        target = _Delivery(app_id, kind, config.webhook_url, body, delivery, config.webhook_secret)
        if self._settled(target, attempt, await self._attempt(target, attempt)):
            return
        wait = retry_delay(attempt, base_s=self._base_delay_s, max_s=self._max_delay_s)
        # Raises Unavailable when the bus cannot keep it: this event (or retry) then comes
        # back from its queue and the attempt is made again.
        await self._retry_later(retries.encode(retries.Retry(attempt + 1, delivery, body)), wait)
        metrics.webhooks.labels(outcome="retried").inc()

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
        return False  # the caller counts "retried" once the retry is scheduled

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
                async with client.stream(
                    "POST", delivery.url, content=delivery.body, headers=delivery.headers()
                ) as response:
                    status = response.status_code
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
