"""aio-pika over the corked writer, against the real RabbitMQ: frames in order, nothing lost."""

from __future__ import annotations

import aio_pika

from herald.adapters.bus.amqp.corked import CorkedConnection


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
