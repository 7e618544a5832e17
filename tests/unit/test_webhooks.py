"""Webhook signing and the retry policy, and the sender's decisions through httpx's mock transport."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest

from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.model import AppConfig
from herald.messaging import events, webhooks
from tests.support.webhook_receiver import outcome_changes, outcome_counts

BASE_S, MAX_S = 0.5, 30.0


def test_sign_is_hmac_sha256_hex_with_a_prefix() -> None:
    # The published test vector of HMAC-SHA256 (RFC 2104 style, as on Wikipedia).
    signature = webhooks.sign("key", b"The quick brown fox jumps over the lazy dog")

    assert signature == "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


def test_sign_matches_what_a_receiver_computes() -> None:
    body = codec.dumps(events.event(events.USER_ONLINE, "app_1", user_id="ü7"))

    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()

    assert webhooks.sign("s3cret", body) == expected
    assert webhooks.verify("s3cret", body, expected)


def test_a_signature_fails_for_another_secret_or_another_body() -> None:
    signature = webhooks.sign("s3cret", b'{"a":1}')

    assert not webhooks.verify("other", b'{"a":1}', signature)
    assert not webhooks.verify("s3cret", b'{"a": 1}', signature)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_answers_worth_a_retry(status: int) -> None:
    assert webhooks.should_retry(status)


@pytest.mark.parametrize("status", [200, 204, 301, 302, 400, 401, 403, 404, 410, 413, 422, 600])
def test_answers_not_worth_a_retry(status: int) -> None:
    assert not webhooks.should_retry(status)


def test_the_ceiling_doubles_from_the_base() -> None:
    ceilings = [webhooks.retry_delay(attempt, base_s=BASE_S, max_s=MAX_S, draw=1.0) for attempt in range(1, 6)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_delay_is_between_half_the_ceiling_and_the_ceiling() -> None:
    for attempt in range(1, 12):
        ceiling = min(MAX_S, BASE_S * 2 ** (attempt - 1))
        low = webhooks.retry_delay(attempt, base_s=BASE_S, max_s=MAX_S, draw=0.0)
        high = webhooks.retry_delay(attempt, base_s=BASE_S, max_s=MAX_S, draw=0.999999)
        assert low == pytest.approx(ceiling / 2)
        assert ceiling / 2 <= high <= ceiling


def test_random_delays_stay_in_bounds_and_spread() -> None:
    drawn = [webhooks.retry_delay(3, base_s=BASE_S, max_s=MAX_S) for _ in range(200)]

    assert all(1.0 <= delay <= 2.0 for delay in drawn)
    assert len(set(drawn)) > 100  # jitter: events that failed together do not retry together


def test_the_delay_never_exceeds_the_maximum_even_after_many_attempts() -> None:
    for attempt in (7, 10, 64, 1_000, 10**9):
        assert webhooks.retry_delay(attempt, base_s=BASE_S, max_s=MAX_S, draw=0.999999) <= MAX_S


def test_attempt_zero_or_less_is_treated_as_the_first() -> None:
    assert webhooks.retry_delay(0, base_s=BASE_S, max_s=MAX_S, draw=1.0) == BASE_S


# The sender, through httpx.MockTransport (no sockets) ----------------------------------


async def _configured(config: AppConfig) -> AppConfig:
    return config


async def test_an_app_without_a_secret_gets_unsigned_requests() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    sender = webhooks.WebhookSender(
        lambda _app: _configured(AppConfig(webhook_url="http://hooks.test/in")), transport=httpx.MockTransport(answer)
    )
    await sender.start()
    try:
        await sender.handle(codec.dumps(events.event(events.GROUP_JOINED, "app_1", user_id="u", group="g")))
    finally:
        await sender.close()

    assert len(seen) == 1
    assert "x-herald-signature" not in seen[0].headers
    assert seen[0].headers["x-herald-event"] == "group.joined"


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"type":"user.online"}', b'{"app_id":"a","type":7}'])
async def test_a_malformed_event_is_dropped_without_a_request(body: bytes) -> None:
    looked_up: list[str] = []

    async def config_of(app_id: str) -> AppConfig:
        looked_up.append(app_id)
        return AppConfig(webhook_url="http://hooks.test/in")

    sender = webhooks.WebhookSender(config_of, transport=httpx.MockTransport(lambda _r: httpx.Response(200)))
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle(body)
    finally:
        await sender.close()

    assert looked_up == []
    assert outcome_changes(before) == {"dropped": 1}


async def test_an_unsupported_url_is_refused_not_retried() -> None:
    sender = webhooks.WebhookSender(
        lambda _app: _configured(AppConfig(webhook_url="ftp://hooks.test/in")),
        transport=None,
        base_delay_s=0.01,
    )
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))
        assert sender.pending == 0
    finally:
        await sender.close()

    assert outcome_changes(before) == {"failed": 1}


async def test_a_store_failure_reaches_the_bus_so_it_redelivers() -> None:
    async def config_of(_app_id: str) -> AppConfig:
        raise Unavailable("store down")

    sender = webhooks.WebhookSender(config_of, transport=httpx.MockTransport(lambda _r: httpx.Response(200)))
    await sender.start()
    try:
        with pytest.raises(Unavailable):
            await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))
    finally:
        await sender.close()


async def test_a_sender_not_started_refuses_events() -> None:
    sender = webhooks.WebhookSender(lambda _app: _configured(AppConfig()))

    with pytest.raises(Unavailable):
        await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))


def test_the_public_api() -> None:
    assert sorted(webhooks.__all__) == ["USER_AGENT", "WebhookSender", "retry_delay", "should_retry", "sign", "verify"]
