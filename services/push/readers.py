"""One connection as the delivery core sees it, and the node's index of them. No I/O.

A ``Reader`` is what the core knows of a live connection: who it is, which channels it
may read and from where (membership bounds), what each channel was sent and what waits
(``ChannelSequence``), what the client acknowledged, and when its token runs out. Its
``sink`` is the socket the node writes to; the core carries it without ever using it, so
the node finds the socket of a decision without a lookup.

``ReaderIndex`` answers "who reads this" in O(1) per message: by user for inboxes, by
(app, channel) for groups and the broadcast. Every map in it has its removal path in
``remove``: a node under reconnect churn holds what a fresh node would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from herald.adapters.directory.base import Presence
from herald.core.model import BROADCAST, user_channel
from herald.services.push.sequencing import ChannelSequence

ChannelKey = tuple[str, str]  # (app_id, channel)


@dataclass(eq=False, slots=True)
class Reader:
    sink: Any  # the socket (services.push.socket.Socket); the core never touches it
    conn_id: str
    app_id: str
    user_id: str
    device: str | None
    token_hash: str = ""
    expires_at: float = float("inf")  # the token's exp (epoch seconds)
    publish: tuple[str, ...] = ()  # channel patterns from the token (herald.core.permissions)
    since: float = field(default_factory=time.time)
    closing: bool = False
    # Set once the channels' starting positions are known (``DeliveryCore.start``): until
    # then a join only records where its channel starts, and live messages are held.
    started: bool = False
    # Group channel -> the offset the user joined after: nothing at or below it is theirs.
    # Per-connection maps (this one and those below) go with the Reader: the node drops
    # every reference to it at ``detach`` (tests/unit/test_push_churn.py counts the Readers left).
    groups: dict[str, int] = field(default_factory=dict)
    # Joins (channel -> after) and leaves (channel -> None) that arrived before the reader
    # started, so the membership read from the store at connect (possibly older than them)
    # does not undo them. None when there were none: most connections never need it.
    early: dict[str, int | None] | None = None
    # Per channel: what was written and what waits (services.push.sequencing); a channel
    # left goes at ``ReaderIndex.unsubscribe``; what waits in one is bounded by MAX_HELD.
    sequences: dict[str, ChannelSequence] = field(default_factory=dict)
    # Per channel: the highest offset this connection acknowledged (clamped to what it
    # was sent): persisted before a clean close is answered. None until its first ack.
    acked: dict[str, int] | None = None
    # The next token deadline (epoch seconds) and whether ``expiring`` was sent for the
    # current token; ``deadline`` is the key of the core's deadline bucket holding it.
    deadline: float | None = None
    warned: bool = False
    # Whether this connection's routes (presence, channel counts) were written at connect:
    # only then may its channels' heads stand in for reading their backlog.
    routed: bool = True

    @property
    def user_channel(self) -> str:
        return user_channel(self.user_id)

    @property
    def shared_channels(self) -> list[str]:
        return [BROADCAST, *self.groups]

    def may_read(self, channel: str) -> bool:
        return channel in self.groups or channel == BROADCAST or channel == self.user_channel

    def bound(self, channel: str) -> int:
        """The lowest position this reader may start ``channel`` at (membership)."""
        return self.groups.get(channel, 0)

    def joined_early(self, channel: str, after: int) -> None:
        if self.early is None:
            self.early = {}
        self.early[channel] = after

    def left_early(self, channel: str) -> None:
        if self.early is None:
            self.early = {}
        self.early[channel] = None

    def pending_starts(self) -> dict[str, int]:
        """Channels joined before the start, and where they start."""
        return {ch: after for ch, after in (self.early or {}).items() if after is not None}

    def has_left_early(self, channel: str) -> bool:
        return self.early is not None and channel in self.early and self.early[channel] is None

    def sequence(self, channel: str) -> ChannelSequence:
        sequence = self.sequences.get(channel)
        if sequence is None:
            sequence = self.sequences[channel] = ChannelSequence()
        return sequence

    def sent(self, channel: str) -> int:
        """The highest offset of ``channel`` this connection was sent (or started after)."""
        sequence = self.sequences.get(channel)
        return sequence.sent if sequence is not None and sequence.started else 0

    @property
    def presence(self) -> Presence:
        return Presence(self.app_id, self.user_id, self.conn_id, self.device, self.since)


class ReaderIndex:
    """Who reads what on this node. Channel reader counts are what the directory routes by."""

    def __init__(self) -> None:
        # A list per user, not a set: users hold a few connections each, and a one-item
        # list costs a quarter of a one-item set (an idle node holds one per user).
        # Removal: ``remove`` (a user's entry goes with its last reader).
        self._by_user: dict[tuple[str, str], list[Reader]] = {}
        # Removal: ``remove`` and ``unsubscribe`` (a channel's entry goes with its last reader).
        self._by_channel: dict[ChannelKey, set[Reader]] = {}
        # Kept as readers come and go (heartbeats read it); an app's entry goes with its last reader.
        self._by_app: dict[str, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Reader]:
        for readers in list(self._by_user.values()):
            yield from list(readers)

    def add(self, reader: Reader) -> None:
        self._by_user.setdefault((reader.app_id, reader.user_id), []).append(reader)
        self._count += 1
        self._by_app[reader.app_id] = self._by_app.get(reader.app_id, 0) + 1
        for channel in reader.shared_channels:
            self._by_channel.setdefault((reader.app_id, channel), set()).add(reader)

    def remove(self, reader: Reader) -> list[ChannelKey]:
        """Forget the reader; the shared channels whose reader count changed (empty if it
        was not here)."""
        key = (reader.app_id, reader.user_id)
        readers = self._by_user.get(key)
        if not readers or reader not in readers:
            return []
        readers.remove(reader)
        if not readers:
            del self._by_user[key]
        self._count -= 1
        left = self._by_app[reader.app_id] - 1
        if left:
            self._by_app[reader.app_id] = left
        else:
            del self._by_app[reader.app_id]
        changed = []
        for channel in reader.shared_channels:
            self._unsubscribe(reader, channel)
            changed.append((reader.app_id, channel))
        return changed

    def subscribe(self, reader: Reader, channel: str, bound: int) -> None:
        """A live reader starts reading a group channel, after ``bound``."""
        reader.groups[channel] = bound
        self._by_channel.setdefault((reader.app_id, channel), set()).add(reader)

    def unsubscribe(self, reader: Reader, channel: str) -> None:
        del reader.groups[channel]
        reader.sequences.pop(channel, None)
        if reader.early is not None:
            reader.early.pop(channel, None)
        self._unsubscribe(reader, channel)

    def _unsubscribe(self, reader: Reader, channel: str) -> None:
        key = (reader.app_id, channel)
        readers = self._by_channel.get(key)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._by_channel[key]

    def of_user(self, app_id: str, user_id: str) -> list[Reader]:
        return self._by_user.get((app_id, user_id), [])

    def readers(self, app_id: str, channel: str) -> set[Reader]:
        return self._by_channel.get((app_id, channel), set())

    def by_app(self) -> dict[str, int]:
        """Readers per app, without walking them."""
        return dict(self._by_app)

    def channel_counts(self, keys: list[ChannelKey] | None = None) -> dict[ChannelKey, int]:
        """Readers per shared channel: of ``keys`` (0 for none left), else of every channel."""
        if keys is None:
            return {key: len(readers) for key, readers in self._by_channel.items()}
        return {key: len(self._by_channel.get(key, ())) for key in keys}

    def presences(self) -> list[Presence]:
        return [reader.presence for reader in self]

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds: what the churn tests compare with a fresh node."""
        return {"users": len(self._by_user), "channels": len(self._by_channel), "apps": len(self._by_app)}
