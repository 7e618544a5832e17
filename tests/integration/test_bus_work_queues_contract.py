"""The work queues' failure rules, dead letters and retries lane, on every bus: in memory,
RabbitMQ with quorum work queues (the default) and RabbitMQ with classic ones.

A handler that raises ``Unavailable`` is tried again without counting; any other failure
counts one failed delivery, and a message failing more than the delivery limit is parked:
listed, replayed or dropped through the bus, while the messages behind it go on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from herald.adapters.bus.amqp import AmqpBus
from herald.core import codec
from herald.core.errors import Unavailable
from herald.ops import metrics
from tests.support.buses import QUIET_S, Broker, Inbox, batches, numbered
from tests.support.waiting import eventually

LIMIT = 2  # failed deliveries allowed; the third failure parks the message
# The pause after a failed delivery (REDELIVERY_PAUSE_S, 0.5 s) is only there to keep a
# failing consumer from spinning; these tests count failures, not pauses, so they take a
# shorter one.
TEST_REDELIVERY_PAUSE_S = 0.1


@pytest.fixture(autouse=True)
def short_redelivery_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """REDELIVERY_PAUSE_S is TEST_REDELIVERY_PAUSE_S in every bus module that uses it."""
    for name, module in list(sys.modules.items()):
        if name.startswith("herald.adapters.bus") and hasattr(module, "REDELIVERY_PAUSE_S"):
            monkeypatch.setattr(module, "REDELIVERY_PAUSE_S", TEST_REDELIVERY_PAUSE_S)


@pytest.fixture(params=["memory", "amqp", "amqp-classic"])
async def broker(request: pytest.FixtureRequest, namespace: str, amqp_url: str) -> AsyncIterator[Broker]:
    broker = Broker(request.param, namespace, amqp_url, delivery_limit=LIMIT)
    try:
        yield broker
    finally:
        await broker.close_all()


def poison_body(message_id: str) -> bytes:
    """A dispatch body the test handlers refuse, with a message id the logs should name."""
    return codec.encode_batch([{"id": message_id, "app": "app_1", "channel": "user:u", "offset": 1}])


class FailsOn:
    """A handler that raises ``failure`` for ``bad`` bodies while ``failing`` is set."""

    def __init__(self, bad: bytes, failure: type[Exception] = RuntimeError) -> None:
        self.bad = bad
        self.failure = failure
        self.failing = True
        self.handled: list[bytes] = []

    async def __call__(self, body: bytes) -> None:
        if body == self.bad and self.failing:
            raise self.failure("cannot handle this one")
        self.handled.append(body)


async def parked_letters(bus_broker: Broker, count: int) -> list:  # type: ignore[type-arg]
    bus = await bus_broker.open()
    letters: list = []  # type: ignore[type-arg]

    async def poll() -> None:
        nonlocal letters
        while len(letters) < count:
            await asyncio.sleep(0.05)
            letters = await bus.dead_letters()

    await asyncio.wait_for(poll(), 30)
    return letters


async def test_a_dispatch_message_that_keeps_failing_is_parked_while_the_rest_flow(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await broker.open()
    poison = poison_body("msg-poison")
    handler = FailsOn(poison)
    await bus.consume_dispatch(batches(handler))
    parked_before = metrics.dead_lettered.labels(queue="dispatch")._value.get()

    with caplog.at_level(logging.ERROR):
        await bus.publish_dispatch(poison)
        for body in numbered(5):
            await bus.publish_dispatch(body)
        await eventually(lambda: handler.handled == numbered(5))

        [letter] = await parked_letters(broker, 1)

    assert (letter.queue, letter.reason, letter.deliveries, letter.body) == ("dispatch", "delivery_limit", 3, poison)
    assert "msg-poison" in letter.about
    assert any("dead-lettered" in r.getMessage() and "msg-poison" in r.getMessage() for r in caplog.records)
    assert metrics.dead_lettered.labels(queue="dispatch")._value.get() == parked_before + 1
    await asyncio.sleep(QUIET_S)
    assert poison not in handler.handled


async def test_a_receipts_message_that_keeps_failing_is_parked_and_the_rest_keep_their_order(broker: Broker) -> None:
    bus = await broker.open()
    handler = FailsOn(b"bad")
    await bus.consume_receipts(handler)

    await bus.publish_receipts(b"bad")
    for body in numbered(5):
        await bus.publish_receipts(body)

    await eventually(lambda: handler.handled == numbered(5))
    [letter] = await parked_letters(broker, 1)
    assert (letter.queue, letter.body) == ("receipts", b"bad")


async def test_an_unavailable_dependency_uses_up_no_deliveries(broker: Broker) -> None:
    bus = await broker.open()
    attempts: list[bytes] = []

    async def down_for_a_while(body: bytes) -> None:
        attempts.append(body)
        if len(attempts) <= LIMIT + 3:
            raise Unavailable("redis is down")

    await bus.consume_dispatch(batches(down_for_a_while))
    await bus.publish_dispatch(b"waits")

    await eventually(lambda: len(attempts) == LIMIT + 4)
    await asyncio.sleep(QUIET_S)
    assert attempts == [b"waits"] * (LIMIT + 4)
    assert await bus.dead_letters() == []


async def test_a_replayed_dead_letter_goes_back_to_its_queue(broker: Broker) -> None:
    bus = await broker.open()
    handler = FailsOn(b"later")
    await bus.consume_dispatch(batches(handler))
    await bus.publish_dispatch(b"later")
    [letter] = await parked_letters(broker, 1)

    handler.failing = False  # the bug was fixed
    assert await bus.replay_dead([letter.id]) == 1

    await eventually(lambda: handler.handled == [b"later"])
    assert await bus.dead_letters() == []


async def test_replaying_everything_takes_every_dead_letter(broker: Broker) -> None:
    bus = await broker.open()
    handler = FailsOn(b"x")
    await bus.consume_receipts(handler)
    await bus.publish_receipts(b"x")
    await bus.publish_receipts(b"x")
    await parked_letters(broker, 2)

    handler.failing = False
    assert await bus.replay_dead() == 2

    await eventually(lambda: handler.handled == [b"x", b"x"])


async def test_a_dropped_dead_letter_is_gone_and_the_others_stay(broker: Broker) -> None:
    bus = await broker.open()
    await bus.consume_dispatch(batches(FailsOn(b"one")))
    await bus.consume_receipts(FailsOn(b"two"))
    await bus.publish_dispatch(b"one")
    await bus.publish_receipts(b"two")
    letters = await parked_letters(broker, 2)
    one = next(letter for letter in letters if letter.body == b"one")

    assert await bus.drop_dead([one.id]) == 1

    assert [letter.body for letter in await bus.dead_letters()] == [b"two"]


async def test_queue_depths_count_the_dead_letters(broker: Broker) -> None:
    bus = await broker.open()
    await bus.consume_dispatch(batches(FailsOn(b"bad")))
    await bus.publish_dispatch(b"bad")
    await parked_letters(broker, 1)

    depths: dict[str, int] = {}
    async with asyncio.timeout(15):
        while depths.get("dead") != 1:
            await asyncio.sleep(0.05)
            depths = await bus.queue_depths()


async def test_a_retry_reaches_a_retries_consumer_after_its_delay(broker: Broker) -> None:
    bus = await broker.open()
    inbox = Inbox()
    await bus.consume_retries(inbox)
    started = time.monotonic()

    await bus.publish_retry(b"again", 0.3)

    await eventually(lambda: inbox.bodies == [b"again"])
    assert time.monotonic() - started >= 0.25


async def test_retries_of_different_delays_each_wait_their_own(broker: Broker) -> None:
    bus = await broker.open()
    inbox = Inbox()
    await bus.consume_retries(inbox)

    await bus.publish_retry(b"slow", 1.5)
    await bus.publish_retry(b"quick", 0.2)

    await eventually(lambda: len(inbox.bodies) == 2)
    assert inbox.bodies == [b"quick", b"slow"]


async def test_a_retry_that_keeps_failing_is_parked(broker: Broker) -> None:
    bus = await broker.open()
    await bus.consume_retries(FailsOn(b"broken"))

    await bus.publish_retry(b"broken", 0.1)

    [letter] = await parked_letters(broker, 1)
    assert letter.queue == "retries"


# RabbitMQ only ---------------------------------------------------------------------------


async def test_a_quorum_bus_drains_the_classic_queues_of_an_earlier_version(namespace: str, amqp_url: str) -> None:
    broker = Broker("amqp", namespace, amqp_url)
    classic = broker.names.work_queues("classic").dispatch
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(classic, durable=True)  # as earlier versions declared it
        await channel.default_exchange.publish(aio_pika.Message(b"left-behind"), routing_key=classic)
    try:
        bus = await broker.open()
        inbox = Inbox()
        await bus.consume_dispatch(batches(inbox))

        await eventually(lambda: inbox.bodies == [b"left-behind"])
        assert "legacy:dispatch" in await bus.queue_depths()
        await bus.publish_dispatch(b"new")
        await eventually(lambda: inbox.bodies == [b"left-behind", b"new"])
    finally:
        await broker.close_all()
        await broker.delete_queue(classic)


async def test_a_work_queue_declared_with_other_arguments_is_used_as_it_is(namespace: str, amqp_url: str) -> None:
    broker = Broker("amqp", namespace, amqp_url, delivery_limit=LIMIT)
    dispatch = broker.names.work_queues("quorum").dispatch
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(dispatch, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 7})
    try:
        bus = await broker.open()
        assert isinstance(bus, AmqpBus)
        inbox = Inbox()
        await bus.consume_dispatch(batches(inbox))
        await bus.publish_dispatch(b"still-works")
        await eventually(lambda: inbox.bodies == [b"still-works"])
    finally:
        await broker.close_all()
