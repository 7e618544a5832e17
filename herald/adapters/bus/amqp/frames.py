"""The AMQP 0-9-1 frames of one ``basic.publish``, encoded in a few ``struct`` calls.

A publish is three frames or more: the ``basic.publish`` method, the content header with
the message's properties, and the body in frames of at most ``frame_max``. aiormq builds
them from pamqp's generic objects: a ``Basic.Publish``, a ``Basic.Properties`` whose every
field is a checked attribute, a ``ContentHeader``, then a marshal walking each field's
declared type. On a push node's connect path that was most of what a ``user.online`` event
cost, for frames whose layout never changes. Herald sets three properties at most
(delivery mode, message id, expiration), so those are encoded here directly; the bytes
are the same as pamqp's (``tests/unit/test_amqp_frames.py`` compares them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Frame types and the end octet (AMQP 0-9-1, 2.3.5).
METHOD, HEADER, BODY = 1, 2, 3
FRAME_END = b"\xce"
# basic (class 60), publish (method 40)
_BASIC, _PUBLISH = 60, 40
# Property flags, most significant bit first in the order the properties are listed.
_DELIVERY_MODE = 1 << 12
_EXPIRATION = 1 << 8
_MESSAGE_ID = 1 << 7

_frame_head = struct.Struct(">BHI").pack
_publish_head = struct.Struct(">HHH").pack(_BASIC, _PUBLISH, 0)
_header_head = struct.Struct(">HHQH").pack


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: what Herald's publishes set, nothing else."""

    routing_key: str
    body: bytes
    persistent: bool = True
    message_id: str | None = None
    expiration_ms: int | None = None  # RabbitMQ's per-message TTL


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"an AMQP short string is at most 255 bytes, not {len(raw)}: {value[:40]!r}")
    return bytes((len(raw),)) + raw


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_head(kind, channel, len(payload)) + payload + FRAME_END


def publish_frames(channel: int, exchange: bytes, message: Outgoing, *, mandatory: bool, max_body: int) -> bytes:
    """Every frame of one publish on ``channel`` to ``exchange`` (already a short string),
    the body split in frames of at most ``max_body`` bytes."""
    method = _publish_head + exchange + shortstr(message.routing_key) + (b"\x01" if mandatory else b"\x00")
    flags = _DELIVERY_MODE
    properties = b"\x02" if message.persistent else b"\x01"
    if message.expiration_ms is not None:
        flags |= _EXPIRATION
        properties += shortstr(str(message.expiration_ms))
    if message.message_id is not None:
        flags |= _MESSAGE_ID
        properties += shortstr(message.message_id)
    body = message.body
    parts = [
        frame(METHOD, channel, method),
        frame(HEADER, channel, _header_head(_BASIC, 0, len(body), flags) + properties),
    ]
    for start in range(0, len(body), max_body):
        parts.append(frame(BODY, channel, body[start : start + max_body]))
    return b"".join(parts)
