"""Webhooks against a real HTTP receiver on the loopback: what arrives, how often, and when not.

The receiver is a few lines of asyncio HTTP/1.1 (one request per connection) so a test
can script its answers (500, 500, 200), make it slow, and see every byte it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from herald.core import codec
from herald.core.model import AppConfig
from herald.messaging import events, webhooks
from tests.support.servers import free_port
from tests.support.webhook_receiver import Receiver, outcome_changes, outcome_counts

WAIT_S = 10.0
# Long enough for a stray retry to show up (the delays below are about 10 ms); used only
# to check that none does.
QUIET_S = 0.3
SECRET = "whsec_test"
FAST = {"base_delay_s": 0.01, "max_delay_s": 0.05, "timeout_s": 2.0}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def sender_for(config: AppConfig, **options: float) -> AsyncIterator[webhooks.WebhookSender]:
    async def config_of(app_id: str) -> AppConfig:
        assert app_id == "app_1"
        return config

    sender = webhooks.WebhookSender(config_of, **{**FAST, **options})  # type: ignore[arg-type]
    await sender.start()
    try:
        yield sender
    finally:
        await asyncio.wait_for(sender.close(), WAIT_S)


def an_event(kind: str = events.USER_ONLINE) -> bytes:
    return codec.dumps(events.event(kind, "app_1", user_id="u7", conn_id="c1", node_id="n1"))


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout_s)


async def test_the_event_arrives_signed_with_the_apps_secret(receiver: Receiver) -> None:
    body = an_event()
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url, webhook_secret=SECRET)) as sender:
        await asyncio.wait_for(sender.handle(body), WAIT_S)

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert (request.method, request.path) == ("POST", "/hooks/herald?token=t")
    assert request.body == body
    assert webhooks.verify(SECRET, request.body, request.headers["x-herald-signature"])
    assert not webhooks.verify("another secret", request.body, request.headers["x-herald-signature"])
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-herald-event"] == "user.online"
    assert request.headers["user-agent"] == "herald-webhooks"
    uuid.UUID(request.headers["x-herald-delivery"])
    assert outcome_changes(before) == {"delivered": 1}


async def test_server_errors_are_retried_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.script = [500, 500]
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url, webhook_secret=SECRET)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        # handle() returned after the first attempt: the retries go on without it.
        assert len(receiver.requests) == 1
        assert sender.pending == 1
        await eventually(lambda: len(receiver.requests) >= 3 and sender.pending == 0)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 3
    assert len({request.headers["x-herald-delivery"] for request in receiver.requests}) == 1
    assert {request.body for request in receiver.requests} == {receiver.requests[0].body}
    assert outcome_changes(before) == {"retried": 2, "delivered": 1}


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_timeouts_and_slow_downs_are_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [status]

    async with sender_for(AppConfig(webhook_url=receiver.url)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: len(receiver.requests) >= 2 and sender.pending == 0)


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_a_client_error_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [status]
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        assert sender.pending == 0
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 1
    assert outcome_changes(before) == {"failed": 1}


async def test_the_sender_gives_up_after_its_attempts(receiver: Receiver) -> None:
    receiver.then = 503
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url), attempts=4) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: sender.pending == 0)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 4
    assert outcome_changes(before) == {"retried": 3, "failed": 1}


async def test_a_single_attempt_means_no_retry(receiver: Receiver) -> None:
    receiver.then = 500

    async with sender_for(AppConfig(webhook_url=receiver.url), attempts=1) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        assert sender.pending == 0

    assert len(receiver.requests) == 1


async def test_no_webhook_url_means_no_request(receiver: Receiver) -> None:
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=None, webhook_secret=SECRET)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        assert sender.pending == 0
        await asyncio.sleep(QUIET_S)

    assert receiver.requests == []
    assert outcome_changes(before) == {}


async def test_an_endpoint_nobody_listens_on_is_retried_then_given_up() -> None:
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=f"http://127.0.0.1:{free_port()}/in"), attempts=3) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: sender.pending == 0)

    assert outcome_changes(before) == {"retried": 2, "failed": 1}


async def test_a_receiver_slower_than_the_timeout_is_retried(receiver: Receiver) -> None:
    receiver.delays_s = [2.0]

    async with sender_for(AppConfig(webhook_url=receiver.url), timeout_s=0.2) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: len(receiver.requests) >= 2 and sender.pending == 0)


async def test_beyond_max_pending_an_event_is_dropped_and_close_abandons_the_rest(receiver: Receiver) -> None:
    receiver.then = 500
    before = outcome_counts()

    # Delays of seconds: the first event is still waiting for its retry when the second fails.
    async with sender_for(
        AppConfig(webhook_url=receiver.url), max_pending=1, base_delay_s=5.0, max_delay_s=5.0
    ) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.wait_for(sender.handle(an_event(events.USER_OFFLINE)), WAIT_S)
        assert sender.pending == 1

    assert len(receiver.requests) == 2
    # One retried (then abandoned at close), one dropped for want of room without a retry.
    assert outcome_changes(before) == {"retried": 1, "dropped": 2}


async def test_a_dead_endpoint_does_not_hold_up_the_next_event(receiver: Receiver) -> None:
    receiver.script = [500]

    async with sender_for(AppConfig(webhook_url=receiver.url), base_delay_s=1.0, max_delay_s=1.0) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.wait_for(sender.handle(an_event(events.GROUP_JOINED)), WAIT_S)
        # The second was delivered while the first still waits for its retry.
        assert [request.headers["x-herald-event"] for request in receiver.requests] == ["user.online", "group.joined"]
        assert sender.pending == 1
