"""Stored messages, deliveries and tokens as the model's objects and back: written once for
both adapters.

Both stores keep the same fields. What differs is only where they sit (SQLite columns named
after the model's fields; MongoDB documents with an ``_id`` and short names) and how a few
values are encoded (MongoDB keeps expiry times as datetimes for its TTL indexes; SQLite
keeps a sender or a token's publish patterns as JSON text). Each adapter turns its row or
document into a *record*, a mapping keyed by the model's field names with times in epoch
seconds, ``data`` as JSON text and ``sender`` as a mapping; these functions do the rest: the
types, the decoding of ``data``, and the defaults of fields that older rows lack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from herald.core import codec
from herald.core.model import Delivery, Message, TokenRecord

# A message's fields in the order SQLite's columns list them.
MESSAGE_FIELDS = (
    "id",
    "app_id",
    "channel",
    "offset",
    "event",
    "data",
    "ts",
    "expires_at",
    "status",
    "idempotency_key",
    "published",
    "sender",
)


def message_record(message: Message) -> dict[str, Any]:
    """What a store writes for a message: its ``data`` as JSON text, so any JSON an app sends
    round-trips exactly and both stores hold the very same bytes."""
    return {
        "id": message.id,
        "app_id": message.app_id,
        "channel": message.channel,
        "offset": message.offset,
        "event": message.event,
        "data": codec.dumps_text(message.data),
        "ts": message.ts,
        "expires_at": message.expires_at,
        "status": message.status,
        "idempotency_key": message.idempotency_key,
        "published": message.published,
        # A mapping, or None for messages from the business system's API key.
        "sender": None if message.sender is None else dict(message.sender),
    }


def message_from(record: Mapping[str, Any]) -> Message:
    """The message a stored record reads back as (a record from before senders has none)."""
    sender = record.get("sender")
    return Message(
        id=record["id"],
        app_id=record["app_id"],
        channel=record["channel"],
        offset=int(record["offset"]),
        event=record["event"],
        data=codec.loads(record["data"]),
        ts=int(record["ts"]),
        expires_at=record["expires_at"],
        status=record["status"],
        idempotency_key=record.get("idempotency_key"),
        published=record["published"],
        sender=None if sender is None else dict(sender),
    )


def delivery_from(record: Mapping[str, Any]) -> Delivery:
    return Delivery(
        message_id=record["message_id"],
        app_id=record["app_id"],
        channel=record["channel"],
        offset=int(record["offset"]),
        conn_id=record["conn_id"],
        device=record["device"],
        delivered_at=record["delivered_at"],
        acked_at=record["acked_at"],
    )


def token_from(record: Mapping[str, Any]) -> TokenRecord:
    """The token a stored record reads back as (a record from before labels and publish
    patterns has neither)."""
    return TokenRecord(
        token_hash=record["token_hash"],
        app_id=record["app_id"],
        user_id=record["user_id"],
        expires_at=record["expires_at"],
        created_at=record["created_at"],
        device=record.get("device"),
        publish=tuple(record.get("publish") or ()),
    )
