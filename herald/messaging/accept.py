"""Accepting messages: the one path from a validated request to a stored, queued message.

Both collect (``POST /v1/messages``) and push nodes (a client's ``publish`` frame) accept
through here, so a message is the same thing whoever sent it. Order is the guarantee:
offsets are allocated, the messages are in the store, and only then does the caller hear
"accepted". Publishing to the bus comes after the store write;
if it fails the messages stay ``published: "pending"`` for the outbox sweeper, and the
caller still gets its 202, because the store has them and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from herald.adapters.bus.base import Bus
from herald.adapters.store.base import Store
from herald.core import codec
from herald.core.errors import BadRequest, PayloadTooLarge, Unavailable
from herald.core.model import (
    BROADCAST,
    EVENT_RE,
    Message,
    check_group,
    check_user_id,
    group_channel,
    new_message_ids,
    now_ms,
    user_channel,
)
from herald.core.offsets import assign_offsets, count_per_channel
from herald.messaging.published import PublishedMarks
from herald.ops import metrics

log = logging.getLogger("herald.accept")


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload: int
    max_recipients: int
    default_ttl_s: int


@dataclass(frozen=True, slots=True)
class Draft:
    """One validated request item: the same event for one or more channels."""

    channels: tuple[str, ...]
    event: str
    data: Any
    ttl_s: int
    sender: dict[str, str] | None = None  # a client publishing from its socket


def draft_for_users(users: Sequence[Any], event: Any, data: Any, ttl_s: int | None, limits: Limits) -> Draft:
    """Check an item addressed to users; refuse it with the reason a caller can act on."""
    if not isinstance(users, list | tuple) or not users:
        raise BadRequest("`to.users` must be a non-empty list of user ids", code="invalid_recipients")
    if len(users) > limits.max_recipients:
        raise PayloadTooLarge(f"at most {limits.max_recipients} users per message", code="too_many_recipients")
    channels = tuple(dict.fromkeys(user_channel(check_user_id(user)) for user in users))
    return _draft(channels, event, data, ttl_s, limits)


def draft_for_group(group: Any, event: Any, data: Any, ttl_s: int | None, limits: Limits) -> Draft:
    """One message on ``group:<name>``: one offset, read by every member's connections."""
    return _draft((group_channel(check_group(group)),), event, data, ttl_s, limits)


def draft_for_channel(channel: str, event: Any, data: Any, limits: Limits, sender: dict[str, str]) -> Draft:
    """A message a client publishes from its socket on one (already checked) channel."""
    return replace(_draft((channel,), event, data, None, limits), sender=sender)


def draft_for_broadcast(event: Any, data: Any, ttl_s: int | None, limits: Limits) -> Draft:
    return _draft((BROADCAST,), event, data, ttl_s, limits)


def draft_for(to: Mapping[str, Any], event: Any, data: Any, ttl_s: int | None, limits: Limits) -> Draft:
    """An item addressed by a ``to`` object: exactly one of ``users``, ``group``, ``broadcast: true``."""
    given = [key for key in ("users", "group", "broadcast") if to.get(key) not in (None, False)]
    if len(given) != 1:
        raise BadRequest("`to` takes exactly one of `users`, `group` or `broadcast: true`", code="invalid_recipients")
    if given == ["users"]:
        return draft_for_users(to["users"], event, data, ttl_s, limits)
    if given == ["group"]:
        return draft_for_group(to["group"], event, data, ttl_s, limits)
    if to["broadcast"] is not True:
        raise BadRequest("`to.broadcast` must be true", code="invalid_recipients")
    return draft_for_broadcast(event, data, ttl_s, limits)


def _draft(channels: tuple[str, ...], event: Any, data: Any, ttl_s: int | None, limits: Limits) -> Draft:
    if not isinstance(event, str) or not EVENT_RE.fullmatch(event):
        raise BadRequest("`event` is 1-64 characters of letters, digits and _.:/-", code="invalid_event")
    size = codec.encoded_size(data)
    if size > limits.max_payload:
        raise PayloadTooLarge(
            f"`data` is {size} bytes of JSON; the limit is {limits.max_payload}",
            details={"size": size, "limit": limits.max_payload},
        )
    return Draft(channels, event, data, ttl_s or limits.default_ttl_s)


class Acceptor:
    """Allocates offsets, stores, then publishes: the order that makes a 202 a promise.

    ``marks`` takes recording the bus confirms (``published: "yes"``) off the caller's
    path: without it each accept waits for its own ``mark_published`` write, which only
    spares the outbox sweeper a re-publish and guards nothing the caller relies on.
    """

    def __init__(self, store: Store, bus: Bus, marks: PublishedMarks | None = None) -> None:
        self._store = store
        self._bus = bus
        self._marks = marks

    async def accept(self, app_id: str, drafts: Sequence[Draft]) -> list[list[Message]]:
        """Store every draft's messages with fresh offsets, then queue them; one list per draft."""
        [accepted] = await self.accept_together([(app_id, drafts)])
        return accepted

    async def accept_together(self, requests: Sequence[tuple[str, Sequence[Draft]]]) -> list[list[list[Message]]]:
        """Accept several requests' drafts as one: per request, one list per draft.

        One offset allocation per app (each distinct channel counted once), one insert and
        one publish for all of them; a channel's offsets follow the order of ``requests``.
        All or nothing: when the store refuses, the error is every request's and nothing
        of any of them is queued.
        """
        channels_of: dict[str, list[str]] = {}
        for app_id, drafts in requests:
            channels_of.setdefault(app_id, []).extend(channel for draft in drafts for channel in draft.channels)
        counts = {app_id: count_per_channel(channels) for app_id, channels in channels_of.items()}
        if len(counts) == 1:
            [(app_id, wanted)] = counts.items()
            lasts = {app_id: await self._store.allocate_offsets(app_id, wanted)}
        else:
            allocated = await asyncio.gather(*(self._store.allocate_offsets(a, c) for a, c in counts.items()))
            lasts = dict(zip(counts, allocated, strict=True))
        # Each app's channels were counted in the order the loop below walks them.
        offsets_of = {app_id: iter(assign_offsets(channels, lasts[app_id])) for app_id, channels in channels_of.items()}
        ids = iter(new_message_ids(sum(len(channels) for channels in channels_of.values())))
        ts = now_ms()
        now = time.time()
        accepted: list[list[list[Message]]] = []
        messages: list[Message] = []
        for app_id, drafts in requests:
            offsets = offsets_of[app_id]
            groups: list[list[Message]] = []
            for draft in drafts:
                expires_at = now + draft.ttl_s
                group = []
                for channel in draft.channels:
                    group.append(
                        Message(
                            id=next(ids),
                            app_id=app_id,
                            channel=channel,
                            offset=next(offsets),
                            event=draft.event,
                            data=draft.data,
                            ts=ts,
                            expires_at=expires_at,
                            sender=draft.sender,
                        )
                    )
                groups.append(group)
                messages.extend(group)
            accepted.append(groups)
        await self._store.insert_messages(messages)
        self._count(messages)
        await self.publish(messages, mark_later=self._marks is not None)
        return accepted

    def _count(self, messages: Sequence[Message]) -> None:
        from_sockets = sum(1 for message in messages if message.sender)
        if from_sockets:
            metrics.messages_accepted.labels("socket").inc(from_sockets)
        if len(messages) > from_sockets:
            metrics.messages_accepted.labels("http").inc(len(messages) - from_sockets)
        if log.isEnabledFor(logging.DEBUG):
            for message in messages:
                log.debug(
                    "accepted %s at %d",
                    message.channel,
                    message.offset,
                    extra={
                        "app_id": message.app_id,
                        "message_id": message.id,
                        "conn_id": (message.sender or {}).get("conn_id"),
                    },
                )

    async def publish(self, messages: Sequence[Message], *, mark_later: bool = False) -> bool:
        """Queue stored messages for dispatch; False leaves them to the outbox sweeper.

        ``mark_later`` hands the confirmed ids to the background marks instead of writing
        them now. The outbox sweeper must not: it pages through what is still pending, and
        would read the same page again before the marks land.
        """
        try:
            for body in codec.encode_batches(message.to_wire() for message in messages):
                await self._bus.publish_dispatch(body)
        except Unavailable as exc:
            log.warning("bus unavailable, %d messages left for the outbox: %s", len(messages), exc.message)
            return False
        ids = [message.id for message in messages]
        if mark_later and self._marks is not None:
            self._marks.add(ids)
            return True
        try:
            await self._store.mark_published(ids)
        except Unavailable as exc:
            log.warning(
                "could not mark %d messages published (they may be sent twice): %s",
                len(messages),
                exc.message,
            )
        return True
