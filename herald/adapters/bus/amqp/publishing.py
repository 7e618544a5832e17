"""Publishes that queue their frames and wait only for the broker's confirms.

aio-pika's ``Exchange.publish`` has aiormq hold the channel's lock until a publish's
frame is written, so a channel's publishes went out one per loop pass, each on its own
(see ``corked``). ``publish_all`` goes further for Herald's own publishes: it numbers the
messages as aiormq's ``basic_publish`` would (the channel's delivery tags, a confirmation
future each in ``channel.confirmations``, the message id for a returned mandatory one),
encodes their frames with ``frames.publish_frames`` and queues them all as one item of
the connection's write queue. aiormq's reader then settles each future as it settles its
own: an ack, a nack (``DeliveryError``), a return (``PublishError``), a closed channel.
Per message that leaves an encoding and a future, where ``basic_publish`` built an
aio-pika ``Message``, pamqp objects and their marshal, a random message id, two context
managers and, through ``gather``, a task.

``publish`` keeps aiormq's path (``wait=False``) for a message with other properties (a
dead letter's headers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange
from aio_pika.exceptions import ChannelInvalidStateError
from aiormq.abc import ChannelFrame

from herald.adapters.bus.amqp.frames import Outgoing, publish_frames, shortstr


async def _underlay(exchange: AbstractExchange) -> aiormq.Channel:
    opened = cast(aio_pika.Exchange, exchange).channel  # aio-pika's exchanges keep it; its ABC does not say
    if opened.is_closed:
        raise ChannelInvalidStateError(f"{opened!r} closed")
    return cast(aiormq.Channel, await opened.get_underlay_channel())


async def publish(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str, *, mandatory: bool
) -> object:
    """``exchange.publish(message, routing_key, mandatory=...)`` without waiting for the write."""
    channel = await _underlay(exchange)
    return await channel.basic_publish(
        message.body,
        exchange=exchange.name,
        routing_key=routing_key,
        properties=message.properties,
        mandatory=mandatory,
        wait=False,
    )


async def publish_all(
    exchange: AbstractExchange, messages: Sequence[Outgoing], *, mandatory: bool
) -> list[object | BaseException]:
    """Publish ``messages`` in order on the exchange's (confirming) channel; each one's
    confirm, or the exception its publish ended with, in the same order."""
    channel = await _underlay(exchange)
    if not channel.publisher_confirms:
        raise RuntimeError("publish_all needs a channel in confirm mode")
    name = shortstr(exchange.name)
    confirmations: list[asyncio.Future[object]] = []
    # The lock orders the delivery tags with aiormq's own publishes on this channel.
    async with channel.lock:
        first = channel.delivery_tag + 1
        encoded = []
        for message in messages:
            encoded.append(
                publish_frames(channel.number, name, message, mandatory=mandatory, max_body=channel.max_content_size)
            )
        try:
            for tag, message in enumerate(messages, first):
                confirmations.append(_expect(channel, tag, message.message_id))
            channel.delivery_tag = first + len(messages) - 1
            await channel.write_queue.put(ChannelFrame(payload=b"".join(encoded), should_close=False))
        except BaseException:
            # Not queued: the broker never saw these tags, the next publish reuses them.
            channel.delivery_tag = first - 1
            for tag, (message, confirmation) in enumerate(zip(messages, confirmations, strict=False), first):
                channel.confirmations.pop(tag, None)
                if message.message_id is not None and channel.message_id_delivery_tag.get(message.message_id) == tag:
                    channel.message_id_delivery_tag.pop(message.message_id)
                confirmation.cancel()
            raise
    return await asyncio.gather(*confirmations, return_exceptions=True)


def _expect(channel: aiormq.Channel, tag: int, message_id: str | None) -> asyncio.Future[object]:
    """The future aiormq's reader settles when the broker confirms (or returns) ``tag``."""
    confirmation: asyncio.Future[object] = channel.create_future()
    channel.confirmations[tag] = confirmation
    if message_id is not None:
        # A returned message is found by its id (aiormq's ``_on_return_frame``).
        channel.message_id_delivery_tag[message_id] = tag

        def forget(_: asyncio.Future[object]) -> None:
            if channel.message_id_delivery_tag.get(message_id) == tag:
                channel.message_id_delivery_tag.pop(message_id)

        confirmation.add_done_callback(forget)
    return confirmation
