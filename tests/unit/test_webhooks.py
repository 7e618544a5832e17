"""Webhook signing and its verification, the retry policy, and the sender's decisions through
httpx's mock transport with the bus's retries lane as a recorder."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest

from herald.core import codec, retries
from herald.core.errors import Unavailable
from herald.core.model import AppConfig
from herald.messaging import events, webhooks
from tests.support.webhook_receiver import outcome_changes, outcome_counts

BASE_S, MAX_S = 0.5, 30.0


NOW = 1_767_225_600


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = codec.dumps(events.event(events.USER_ONLINE, "app_1", user_id="ü7"))

    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()

    assert webhooks.sign("s3cret", body, NOW) == f"t={NOW},v1={expected}"


def test_the_signature_headers_carry_the_same_timestamp() -> None:
    headers = webhooks.signature_headers("s3cret", b"{}", now=NOW + 0.9)

    assert headers["x-herald-timestamp"] == str(NOW)
    assert headers["x-herald-signature"] == webhooks.sign("s3cret", b"{}", NOW)


def test_a_fresh_signature_verifies() -> None:
    signature = webhooks.sign("s3cret", b'{"a":1}', NOW)

    assert webhooks.verify("s3cret", b'{"a":1}', signature, now=NOW + 299)
    assert webhooks.verify("s3cret", b'{"a":1}', signature, now=NOW - 299)


@pytest.mark.parametrize("late_s", [301, 3600, -301])
def test_a_signature_outside_the_tolerance_is_a_replay(late_s: int) -> None:
    signature = webhooks.sign("s3cret", b'{"a":1}', NOW)

    assert not webhooks.verify("s3cret", b'{"a":1}', signature, now=NOW + late_s)


def test_the_tolerance_is_the_receivers_choice() -> None:
    signature = webhooks.sign("s3cret", b"{}", NOW)

    assert webhooks.verify("s3cret", b"{}", signature, now=NOW + 3000, tolerance_s=3600)
    assert not webhooks.verify("s3cret", b"{}", signature, now=NOW + 30, tolerance_s=10)


def test_a_signature_fails_for_another_secret_body_or_timestamp() -> None:
    signature = webhooks.sign("s3cret", b'{"a":1}', NOW)
    moved = signature.replace(f"t={NOW}", f"t={NOW + 1}")

    assert not webhooks.verify("other", b'{"a":1}', signature, now=NOW)
    assert not webhooks.verify("s3cret", b'{"a": 1}', signature, now=NOW)
    assert not webhooks.verify("s3cret", b'{"a":1}', moved, now=NOW)


def test_any_of_several_signatures_verifies_while_a_secret_is_rotated() -> None:
    old, new = webhooks.sign("old", b"{}", NOW), webhooks.sign("new", b"{}", NOW)
    both = f"{new},v1={old.rpartition('v1=')[2]}"

    assert webhooks.verify("old", b"{}", both, now=NOW)
    assert webhooks.verify("new", b"{}", both, now=NOW)


@pytest.mark.parametrize(
    "header", ["", "v1=abc", f"t={NOW}", "t=soon,v1=abc", "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a1"]
)
def test_a_malformed_signature_header_never_verifies(header: str) -> None:
    assert not webhooks.verify("s3cret", b"{}", header, now=NOW)


def test_the_delivery_id_is_the_same_for_the_same_event_and_differs_between_events() -> None:
    one = codec.dumps(events.event(events.USER_ONLINE, "app_1", user_id="a"))
    two = codec.dumps(events.event(events.USER_ONLINE, "app_1", user_id="b"))

    assert webhooks.delivery_id("app_1", one) == webhooks.delivery_id("app_1", one)
    assert webhooks.delivery_id("app_1", one) != webhooks.delivery_id("app_1", two)


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


class Lane:
    """The bus's retries lane as a recorder: what was scheduled, and after how long."""

    def __init__(self, refuse: bool = False) -> None:
        self.scheduled: list[tuple[retries.Retry, float]] = []
        self.refuse = refuse

    async def __call__(self, envelope: bytes, delay_s: float) -> None:
        if self.refuse:
            raise Unavailable("RabbitMQ is down")
        self.scheduled.append((retries.decode(envelope), delay_s))


async def _configured(config: AppConfig) -> AppConfig:
    return config


def _answering(*statuses: int) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    script = list(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(script.pop(0) if len(script) > 1 else script[0])

    return httpx.MockTransport(answer), seen


def _sender(config: AppConfig, lane: Lane, transport: httpx.AsyncBaseTransport | None, **options: Any) -> Any:
    return webhooks.WebhookSender(lambda _app: _configured(config), lane, transport=transport, **options)


EVENT = codec.dumps(events.event(events.GROUP_JOINED, "app_1", user_id="u", group="g"))


async def test_an_app_without_a_secret_gets_unsigned_requests() -> None:
    transport, seen = _answering(204)
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in"), Lane(), transport)
    await sender.start()
    try:
        await sender.handle(EVENT)
    finally:
        await sender.close()

    assert len(seen) == 1
    assert "x-herald-signature" not in seen[0].headers and "x-herald-timestamp" not in seen[0].headers
    assert seen[0].headers["x-herald-event"] == "group.joined"


async def test_a_failed_attempt_schedules_the_next_in_the_bus_with_the_same_delivery_id() -> None:
    transport, seen = _answering(503)
    lane = Lane()
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in", webhook_secret="s"), lane, transport)
    await sender.start()
    try:
        await sender.handle(EVENT)
    finally:
        await sender.close()

    [(retry, delay_s)] = lane.scheduled
    assert (retry.attempt, retry.delivery_id, retry.body) == (2, seen[0].headers["x-herald-delivery"], EVENT)
    assert 0.25 <= delay_s <= 0.5


async def test_a_retry_makes_its_attempt_and_schedules_the_one_after() -> None:
    transport, seen = _answering(500)
    lane = Lane()
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in", webhook_secret="s"), lane, transport)
    await sender.start()
    try:
        await sender.handle_retry(retries.encode(retries.Retry(3, "d-1", EVENT)))
    finally:
        await sender.close()

    assert seen[0].headers["x-herald-delivery"] == "d-1"
    assert webhooks.verify("s", seen[0].content, seen[0].headers["x-herald-signature"])
    [(retry, delay_s)] = lane.scheduled
    assert (retry.attempt, retry.delivery_id) == (4, "d-1")
    assert 1.0 <= delay_s <= 2.0  # after the third attempt: between half the ceiling and the ceiling


async def test_the_last_attempt_schedules_nothing() -> None:
    transport, _ = _answering(500)
    lane = Lane()
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in"), lane, transport, attempts=3)
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle_retry(retries.encode(retries.Retry(3, "d-1", EVENT)))
    finally:
        await sender.close()

    assert lane.scheduled == []
    assert outcome_changes(before) == {"failed": 1}


async def test_a_retry_the_bus_cannot_keep_hands_the_event_back() -> None:
    transport, _ = _answering(500)
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in"), Lane(refuse=True), transport)
    await sender.start()
    try:
        with pytest.raises(Unavailable):
            await sender.handle(EVENT)
    finally:
        await sender.close()


async def test_a_retry_for_an_app_whose_webhook_was_removed_is_dropped() -> None:
    transport, seen = _answering(200)
    sender = _sender(AppConfig(webhook_url=None), Lane(), transport)
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle_retry(retries.encode(retries.Retry(2, "d-1", EVENT)))
    finally:
        await sender.close()

    assert seen == []
    assert outcome_changes(before) == {"dropped": 1}


@pytest.mark.parametrize(
    "envelope", [b"no header line", b'{"attempt":2}\n{}', b'{"attempt":2,"delivery":"d"}\nnot json']
)
async def test_a_malformed_retry_raises_so_the_bus_parks_it(envelope: bytes) -> None:
    transport, _ = _answering(200)
    sender = _sender(AppConfig(webhook_url="http://hooks.test/in"), Lane(), transport)
    await sender.start()
    try:
        with pytest.raises(ValueError):
            await sender.handle_retry(envelope)
    finally:
        await sender.close()


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"type":"user.online"}', b'{"app_id":"a","type":7}'])
async def test_a_malformed_event_is_dropped_without_a_request(body: bytes) -> None:
    looked_up: list[str] = []

    async def config_of(app_id: str) -> AppConfig:
        looked_up.append(app_id)
        return AppConfig(webhook_url="http://hooks.test/in")

    transport, _ = _answering(200)
    sender = webhooks.WebhookSender(config_of, Lane(), transport=transport)
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle(body)
    finally:
        await sender.close()

    assert looked_up == []
    assert outcome_changes(before) == {"dropped": 1}


async def test_an_unsupported_url_is_refused_not_retried() -> None:
    lane = Lane()
    sender = _sender(AppConfig(webhook_url="ftp://hooks.test/in"), lane, None)
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))
    finally:
        await sender.close()

    assert lane.scheduled == []
    assert outcome_changes(before) == {"failed": 1}


async def test_a_private_address_is_refused_when_the_deployment_blocks_them() -> None:
    transport, seen = _answering(200)
    lane = Lane()
    sender = _sender(AppConfig(webhook_url="http://127.0.0.1:9/in"), lane, transport, block_private=True)
    await sender.start()
    before = outcome_counts()
    try:
        await sender.handle(EVENT)
    finally:
        await sender.close()

    assert seen == [] and lane.scheduled == []
    assert outcome_changes(before) == {"failed": 1}


async def test_a_store_failure_reaches_the_bus_so_it_redelivers() -> None:
    async def config_of(_app_id: str) -> AppConfig:
        raise Unavailable("store down")

    transport, _ = _answering(200)
    sender = webhooks.WebhookSender(config_of, Lane(), transport=transport)
    await sender.start()
    try:
        with pytest.raises(Unavailable):
            await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))
    finally:
        await sender.close()


async def test_a_sender_not_started_refuses_events() -> None:
    sender = webhooks.WebhookSender(lambda _app: _configured(AppConfig()), Lane())

    with pytest.raises(Unavailable):
        await sender.handle(codec.dumps(events.event(events.USER_ONLINE, "app_1")))


def test_the_public_api() -> None:
    assert sorted(webhooks.__all__) == [
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
