"""Webhooks against a real HTTP receiver on the loopback: what arrives, how often, and when not.

The receiver is a few lines of asyncio HTTP/1.1 (one request per connection) so a test
can script its answers (500, 500, 200), make it slow, and see every byte it was sent.
Retries go through a real retries lane: the in-process bus, or RabbitMQ where the test is
about a retry outliving its sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from herald.adapters.bus.amqp import AmqpBus
from herald.adapters.bus.base import Bus
from herald.adapters.bus.memory import MemoryBus
from herald.core import codec
from herald.core.model import AppConfig
from herald.core.names import Names
from herald.messaging import events, webhooks
from tests.support.servers import free_port
from tests.support.waiting import eventually
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
async def sender_for(
    config: AppConfig, bus: Bus | None = None, **options: float
) -> AsyncIterator[webhooks.WebhookSender]:
    """A started sender whose retries go through ``bus`` (a fresh in-process bus by default)
    and come back to it, as dispatch wires it."""

    async def config_of(app_id: str) -> AppConfig:
        assert app_id == "app_1"
        return config

    lane = bus or MemoryBus()
    if bus is None:
        await lane.start()
    sender = webhooks.WebhookSender(config_of, lane.publish_retry, **{**FAST, **options})  # type: ignore[arg-type]
    await sender.start()
    await lane.consume_retries(sender.handle_retry)
    try:
        yield sender
    finally:
        await lane.stop_consuming()
        await asyncio.wait_for(sender.close(), WAIT_S)
        if bus is None:
            await lane.close()


def an_event(kind: str = events.USER_ONLINE) -> bytes:
    return codec.dumps(events.event(kind, "app_1", user_id="u7", conn_id="c1", node_id="n1"))


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
    assert request.headers["x-herald-signature"].startswith(f"t={request.headers['x-herald-timestamp']},v1=")
    uuid.UUID(request.headers["x-herald-delivery"])
    assert outcome_changes(before) == {"delivered": 1}


async def test_server_errors_are_retried_with_the_same_delivery_id(receiver: Receiver) -> None:
    receiver.script = [500, 500]
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url, webhook_secret=SECRET)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        # handle() returned after the first attempt: the retries go on without it.
        assert len(receiver.requests) == 1
        await eventually(lambda: len(receiver.requests) >= 3)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 3
    assert len({request.headers["x-herald-delivery"] for request in receiver.requests}) == 1
    assert {request.body for request in receiver.requests} == {receiver.requests[0].body}
    assert all(webhooks.verify(SECRET, r.body, r.headers["x-herald-signature"]) for r in receiver.requests)
    assert outcome_changes(before) == {"retried": 2, "delivered": 1}


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_timeouts_and_slow_downs_are_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [status]

    async with sender_for(AppConfig(webhook_url=receiver.url)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: len(receiver.requests) >= 2)


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_a_client_error_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [status]
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 1
    assert outcome_changes(before) == {"failed": 1}


async def test_the_sender_gives_up_after_its_attempts(receiver: Receiver) -> None:
    receiver.then = 503
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=receiver.url), attempts=4) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: outcome_changes(before).get("failed") == 1)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 4
    assert outcome_changes(before) == {"retried": 3, "failed": 1}


async def test_a_single_attempt_means_no_retry(receiver: Receiver) -> None:
    receiver.then = 500

    async with sender_for(AppConfig(webhook_url=receiver.url), attempts=1) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.sleep(QUIET_S)

    assert len(receiver.requests) == 1


async def test_no_webhook_url_means_no_request(receiver: Receiver) -> None:
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=None, webhook_secret=SECRET)) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.sleep(QUIET_S)

    assert receiver.requests == []
    assert outcome_changes(before) == {}


async def test_an_endpoint_nobody_listens_on_is_retried_then_given_up() -> None:
    before = outcome_counts()

    async with sender_for(AppConfig(webhook_url=f"http://127.0.0.1:{free_port()}/in"), attempts=3) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: outcome_changes(before).get("failed") == 1)

    assert outcome_changes(before) == {"retried": 2, "failed": 1}


async def test_a_receiver_slower_than_the_timeout_is_retried(receiver: Receiver) -> None:
    receiver.delays_s = [2.0]

    async with sender_for(AppConfig(webhook_url=receiver.url), timeout_s=0.2) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await eventually(lambda: len(receiver.requests) >= 2)


async def test_a_retry_waits_in_rabbitmq_and_outlives_the_sender_that_scheduled_it(
    receiver: Receiver, namespace: str, amqp_url: str
) -> None:
    receiver.script = [500]
    config = AppConfig(webhook_url=receiver.url, webhook_secret=SECRET)
    first_bus = AmqpBus(amqp_url, Names(namespace))
    await first_bus.start()
    async with sender_for(config, first_bus, base_delay_s=1.0, max_delay_s=1.0) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
    await first_bus.close()  # the process that scheduled the retry is gone
    assert len(receiver.requests) == 1

    second_bus = AmqpBus(amqp_url, Names(namespace))
    await second_bus.start()
    try:
        async with sender_for(config, second_bus):
            await eventually(lambda: len(receiver.requests) >= 2)
    finally:
        await second_bus.close()

    first, second = receiver.requests
    assert first.headers["x-herald-delivery"] == second.headers["x-herald-delivery"]
    assert second.body == first.body
    assert webhooks.verify(SECRET, second.body, second.headers["x-herald-signature"])


async def test_a_dead_endpoint_does_not_hold_up_the_next_event(receiver: Receiver) -> None:
    receiver.script = [500]

    async with sender_for(AppConfig(webhook_url=receiver.url), base_delay_s=1.0, max_delay_s=1.0) as sender:
        await asyncio.wait_for(sender.handle(an_event()), WAIT_S)
        await asyncio.wait_for(sender.handle(an_event(events.GROUP_JOINED)), WAIT_S)
        # The second was delivered while the first still waits for its retry.
        assert [request.headers["x-herald-event"] for request in receiver.requests] == ["user.online", "group.joined"]
