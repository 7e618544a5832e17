"""What a message is, what a channel is, and which ids Herald accepts.

One stored message lives on one channel: a POST to three users is three messages on
``user:a``, ``user:b`` and ``user:c``, each with its own offset, so a client's position
in any channel is one integer and resume is a range query.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from herald.core.errors import BadRequest

# The patterns are published in the OpenAPI schemas too. Check with fullmatch(): in Python,
# `$` also matches before a trailing newline, so match() would take "7\n" for "7".
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.@:+=\-]{1,128}$")
GROUP_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
EVENT_RE = re.compile(r"^[A-Za-z0-9_.:/\-]{1,64}$")
APP_ID_RE = re.compile(r"^app_[a-f0-9]{16}$")

BROADCAST = "broadcast"
STATUSES = ("accepted", "dispatched", "delivered", "acked")


def status_rank(status: str) -> int:
    return STATUSES.index(status)


def later_statuses_than(status: str) -> tuple[str, ...]:
    """Statuses that must not be overwritten by ``status``: a status only moves forward."""
    return STATUSES[status_rank(status) :]


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


def group_channel(group: str) -> str:
    return f"group:{group}"


def check_user_id(user_id: Any) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise BadRequest(
            "user ids are 1-128 characters of letters, digits and _.@:+=-",
            code="invalid_user_id",
            details={"user_id": user_id if isinstance(user_id, str) else repr(user_id)},
        )
    return user_id


def check_group(group: Any) -> str:
    if not isinstance(group, str) or not GROUP_RE.fullmatch(group):
        raise BadRequest(
            "group names are 1-128 characters of letters, digits and _.:-",
            code="invalid_group",
            details={"group": group if isinstance(group, str) else repr(group)},
        )
    return group


def parse_channel(channel: Any) -> tuple[str, str]:
    """Split a channel name into (kind, name) or refuse it: ``user:7`` -> ("user", "7")."""
    if channel == BROADCAST:
        return BROADCAST, ""
    if isinstance(channel, str):
        kind, _, name = channel.partition(":")
        if kind == "user" and USER_ID_RE.fullmatch(name):
            return kind, name
        if kind == "group" and GROUP_RE.fullmatch(name):
            return kind, name
    raise BadRequest(
        "channels are user:<user_id>, group:<name> or broadcast",
        code="invalid_channel",
        # Not repr(): a client's channel may be a list nested a thousand deep (RecursionError).
        details={"channel": channel if isinstance(channel, str) else f"<{type(channel).__name__}>"},
    )


def new_message_id() -> str:
    return uuid.uuid4().hex


def new_message_ids(count: int) -> list[str]:
    """``count`` fresh ids shaped like ``new_message_id()``'s (32 hex digits, 128 random bits).

    One read of the system's randomness for a whole batch: building a ``uuid.UUID`` per
    message was a tenth of collect's time on 1,000-message batches. The ids are opaque,
    so nothing depends on uuid4's version bits.
    """
    raw = os.urandom(16 * count).hex()
    return [raw[start : start + 32] for start in range(0, 32 * count, 32)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Message:
    """A stored message: the unit of offsets, history, replay and status."""

    id: str
    app_id: str
    channel: str
    offset: int
    event: str
    data: Any
    ts: int
    expires_at: float
    status: str = "accepted"
    idempotency_key: str | None = None
    published: str = "pending"
    # Who published it when a client did (over its WebSocket): {"user_id", "conn_id"}.
    # None for messages from the business system's API key.
    sender: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The fields the bus carries between collect, dispatch and push nodes."""
        wire = {
            "id": self.id,
            "app": self.app_id,
            "channel": self.channel,
            "offset": self.offset,
            "event": self.event,
            "data": self.data,
            "ts": self.ts,
        }
        if self.sender is not None:
            wire["from"] = self.sender
        return wire

    def to_public(self) -> dict[str, Any]:
        """What an app sees of a message through the HTTP API."""
        return {
            "id": self.id,
            "channel": self.channel,
            "offset": self.offset,
            "event": self.event,
            "data": self.data,
            "ts": self.ts,
            "expires_at": self.expires_at,
            "status": self.status,
            "from": self.sender,
        }


@dataclass(frozen=True, slots=True)
class App:
    app_id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class AppLimits:
    """Per-app limits. Zero (or None for the payload and batch) means "the process default"."""

    messages_per_s: float = 0.0  # token bucket refill rate shared by every collect replica; 0: unlimited
    burst: int = 0  # bucket size; 0: one second's worth
    max_payload: int | None = None
    max_batch: int | None = None
    connections_per_user: int = 0  # 0: unlimited
    groups_per_user: int = 0  # 0: unlimited
    frames_per_s: float = 0.0  # per connection, frames from the client; 0: the node default

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages_per_s": self.messages_per_s,
            "burst": self.burst,
            "max_payload": self.max_payload,
            "max_batch": self.max_batch,
            "connections_per_user": self.connections_per_user,
            "groups_per_user": self.groups_per_user,
            "frames_per_s": self.frames_per_s,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AppLimits:
        known = cls().to_dict()
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True, slots=True)
class AppConfig:
    """What an operator sets per app: where its webhooks go, how they are signed, its limits.

    Stored as one JSON document per app (``Store.get_app_config``); services cache it briefly.
    """

    webhook_url: str | None = None
    webhook_secret: str | None = None
    limits: AppLimits = field(default_factory=AppLimits)
    # Where push nodes ask whether a client's publish may go out (signed like webhooks).
    publish_hook_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "webhook_url": self.webhook_url,
            "webhook_secret": self.webhook_secret,
            "limits": self.limits.to_dict(),
            "publish_hook_url": self.publish_hook_url,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AppConfig:
        return cls(
            webhook_url=raw.get("webhook_url"),
            webhook_secret=raw.get("webhook_secret"),
            limits=AppLimits.from_dict(raw.get("limits") or {}),
            publish_hook_url=raw.get("publish_hook_url"),
        )


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A user connect token as stored: only its hash is the key, the token itself is never kept."""

    token_hash: str
    app_id: str
    user_id: str
    expires_at: float
    created_at: float = field(default=0.0)
    device: str | None = None  # a label shown in presence (a connection's ?device= overrides it)
    # Channel patterns the user may publish to from the socket (fnmatch: "group:room-*").
    publish: tuple[str, ...] = ()


# How long per-device delivery records are kept (status detail, not replayable data).
DELIVERY_RETENTION_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message written to one connection: the per-device detail behind its status."""

    message_id: str
    app_id: str
    channel: str
    offset: int
    conn_id: str
    device: str | None
    delivered_at: float
    acked_at: float = 0.0  # 0 until that connection acknowledged it

    def to_public(self) -> dict[str, Any]:
        return {
            "conn_id": self.conn_id,
            "device": self.device,
            "delivered_at": self.delivered_at,
            "acked_at": self.acked_at or None,
        }
