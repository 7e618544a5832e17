"""A publish's frames encoded by hand are the bytes aiormq and pamqp would send."""

from __future__ import annotations

import pytest
from aiormq.abc import ChannelFrame
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from herald.adapters.bus.amqp.frames import Outgoing, publish_frames, shortstr

MAX_BODY = 131072 - 8  # RabbitMQ's default frame_max less a frame's overhead


def pamqp_frames(channel: int, exchange: str, message: Outgoing, *, mandatory: bool, max_body: int) -> bytes:
    """What aiormq's ``basic_publish`` queues for the same message."""
    properties = commands.Basic.Properties(
        delivery_mode=2 if message.persistent else 1,
        message_id=message.message_id,
        expiration=None if message.expiration_ms is None else str(message.expiration_ms),
    )
    body = message.body
    frames: list[object] = [
        commands.Basic.Publish(exchange=exchange, routing_key=message.routing_key, mandatory=mandatory),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    frames += [ContentBody(body[start : start + max_body]) for start in range(0, len(body), max_body)]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload  # type: ignore[arg-type]


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
# What pamqp accepts as an exchange name (AMQP's exchange-name domain).
exchanges = st.text(st.sampled_from("abcXYZ019-_.:"), max_size=127)


@given(
    channel=st.integers(1, 2047),
    exchange=exchanges,
    routing_key=names,
    body=st.binary(max_size=300),
    persistent=st.booleans(),
    message_id=st.none() | st.text(st.characters(codec="ascii"), min_size=1, max_size=40),
    expiration_ms=st.none() | st.integers(0, 10**9),
    mandatory=st.booleans(),
    max_body=st.integers(1, 400),
)
def test_publish_frames_match_pamqps_marshal(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    persistent: bool,
    message_id: str | None,
    expiration_ms: int | None,
    mandatory: bool,
    max_body: int,
) -> None:
    message = Outgoing(routing_key, body, persistent, message_id, expiration_ms)
    ours = publish_frames(channel, shortstr(exchange), message, mandatory=mandatory, max_body=max_body)
    assert ours == pamqp_frames(channel, exchange, message, mandatory=mandatory, max_body=max_body)


def test_a_large_body_is_split_into_frames_of_frame_max() -> None:
    message = Outgoing("herald.dispatch", b"x" * (MAX_BODY * 2 + 5), message_id="m1")
    ours = publish_frames(3, shortstr("herald"), message, mandatory=True, max_body=MAX_BODY)
    assert ours == pamqp_frames(3, "herald", message, mandatory=True, max_body=MAX_BODY)
    assert ours.count(b"\xce" + bytes((3,))) == 3  # three body frames follow the header


def test_an_empty_body_sends_no_body_frame() -> None:
    message = Outgoing("key", b"")
    assert publish_frames(1, shortstr(""), message, mandatory=False, max_body=MAX_BODY) == pamqp_frames(
        1, "", message, mandatory=False, max_body=MAX_BODY
    )


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        publish_frames(1, shortstr(""), Outgoing("é" * 128, b"{}"), mandatory=False, max_body=MAX_BODY)
