"""``publish_all`` against the real RabbitMQ: frames encoded by Herald, confirms settled by aiormq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import ChannelInvalidStateError, PublishError
from pamqp.commands import Basic

from herald.adapters.bus.amqp.corked import CorkedConnection
from herald.adapters.bus.amqp.frames import Outgoing
from herald.adapters.bus.amqp.publishing import publish, publish_all


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp_url, timeout=5, connection_class=CorkedConnection)
    try:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    finally:
        await connection.close()


async def test_every_message_is_confirmed_and_arrives_in_order_with_its_properties(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("", exclusive=True)
    messages = [Outgoing(queue.name, b"%d" % n, message_id=f"m{n}", expiration_ms=60_000) for n in range(50)]

    confirms = await publish_all(channel.default_exchange, messages, mandatory=True)

    assert all(isinstance(confirm, Basic.Ack) for confirm in confirms)
    received = [await queue.get(timeout=5) for _ in messages]
    assert [m.body for m in received] == [m.body for m in messages]
    assert [m.message_id for m in received] == [f"m{n}" for n in range(50)]
    assert {m.delivery_mode for m in received} == {aio_pika.DeliveryMode.PERSISTENT}
    assert {m.expiration for m in received} == {60.0}


async def test_a_body_larger_than_a_frame_arrives_whole(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("", exclusive=True)
    body = bytes(range(256)) * 2000  # 512,000 bytes: four frames at RabbitMQ's default frame_max

    [confirm] = await publish_all(channel.default_exchange, [Outgoing(queue.name, body)], mandatory=True)

    assert isinstance(confirm, Basic.Ack)
    assert (await queue.get(timeout=5)).body == body


async def test_an_unroutable_mandatory_message_comes_back_as_its_own_error(channel: AbstractChannel) -> None:
    queue = await channel.declare_queue("", exclusive=True)
    messages = [
        Outgoing(queue.name, b"kept", message_id="kept"),
        Outgoing("herald.no-such-queue", b"lost", message_id="lost"),
        Outgoing(queue.name, b"kept too", message_id="kept-too"),
    ]

    first, returned, third = await publish_all(channel.default_exchange, messages, mandatory=True)

    assert isinstance(first, Basic.Ack) and isinstance(third, Basic.Ack)
    assert isinstance(returned, PublishError)


async def test_publishes_through_aiormq_and_publish_all_on_one_channel_keep_their_confirms_apart(
    channel: AbstractChannel,
) -> None:
    queue = await channel.declare_queue("", exclusive=True)
    singles = [
        publish(channel.default_exchange, aio_pika.Message(b"s%d" % n), queue.name, mandatory=True) for n in range(20)
    ]
    batches = [
        publish_all(
            channel.default_exchange, [Outgoing(queue.name, b"b%d.%d" % (n, k)) for k in range(5)], mandatory=True
        )
        for n in range(20)
    ]

    results = await asyncio.gather(*singles, *batches)

    confirms = results[:20] + [confirm for batch in results[20:] for confirm in batch]
    assert len(confirms) == 120 and all(isinstance(confirm, Basic.Ack) for confirm in confirms)
    declared = await channel.declare_queue(queue.name, passive=True)
    assert declared.declaration_result.message_count == 120


async def test_a_closed_channel_refuses_at_once(channel: AbstractChannel) -> None:
    await channel.close()
    with pytest.raises(ChannelInvalidStateError):
        await publish_all(channel.default_exchange, [Outgoing("any", b"{}")], mandatory=False)
