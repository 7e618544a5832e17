"""aio-pika over the corked writer, against the real RabbitMQ: frames in order, nothing lost."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from pamqp.commands import Basic
from yarl import URL

from herald.adapters.bus.amqp.corked import CorkedConnection, CorkedTransportFactory, CorkedWriter
from herald.adapters.bus.amqp.publishing import publish


async def test_a_corked_connection_publishes_and_consumes_on_rabbitmq(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url, timeout=5, connection_class=CorkedConnection)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        for n in range(20):
            await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=queue.name)
        bodies = []
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                bodies.append(message.body.decode())
                if len(bodies) == 20:
                    break
        assert bodies == [str(n) for n in range(20)]
    finally:
        await connection.close()


class _CountingFactory(CorkedTransportFactory):
    """Counts the sends of the writers it makes (an uncork with something kept is one)."""

    def __init__(self) -> None:
        self.sends = 0

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        assert isinstance(writer, CorkedWriter)
        uncork = writer.uncork

        def counted() -> None:
            if writer._kept:
                self.sends += 1
            uncork()

        writer.uncork = counted  # type: ignore[method-assign]
        return reader, writer


async def test_the_acks_of_one_turn_share_their_sends(amqp_url: str) -> None:
    factory = _CountingFactory()

    class Counted(CorkedConnection):
        def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            super().__init__(url, loop, **kwargs)
            self.kwargs["transport_factory"] = factory

    connection = await aio_pika.connect(amqp_url, timeout=5, connection_class=Counted)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("", exclusive=True)
        confirms = await asyncio.gather(
            *(
                publish(channel.default_exchange, aio_pika.Message(b"%d" % n), queue.name, mandatory=True)
                for n in range(100)
            )
        )
        assert all(isinstance(confirm, Basic.Ack) for confirm in confirms)
        received = [await queue.get(timeout=5) for _ in range(100)]
        before = factory.sends

        await asyncio.gather(*(message.ack() for message in received))

        assert factory.sends - before <= 20  # aiormq queues 10 frames at most: about 10 sends, not 100
        await channel.close()
        checking = await connection.channel()
        declared = await checking.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 0  # every ack reached the broker
    finally:
        await connection.close()
