"""This node's live connections, indexed by user and by shared channel, and what each was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herald.services.push.sequencing import ChannelSequence

from herald.adapters.directory.base import Presence
from herald.core.model import BROADCAST, user_channel

if TYPE_CHECKING:
    from herald.services.push.socket import Socket

ChannelKey = tuple[str, str]  # (app_id, channel)


@dataclass(slots=True)
class FrameBudget:
    """Token bucket on the frames a client sends: a flood gets error frames, not our CPU."""

    rate_per_s: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    warned_at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    @property
    def burst(self) -> float:
        return max(1.0, self.rate_per_s * 2)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(eq=False, slots=True)
class Connection:
    ws: Socket
    conn_id: str
    app_id: str
    user_id: str
    device: str | None
    token_hash: str = ""
    publish: tuple[str, ...] = ()  # channel patterns from the token (herald.permissions)
    frames: FrameBudget = field(default_factory=lambda: FrameBudget(50.0))
    since: float = field(default_factory=time.time)
    closing: bool = False
    # Set once the welcome is out and the channels' starting positions are known: until
    # then a join only records where its channel starts (see PushNode.join).
    started: bool = False
    groups: set[str] = field(default_factory=set)  # group channels, "group:<name>"
    pending_starts: dict[str, int] = field(default_factory=dict)
    # Per channel: what was written and what waits (see herald.sequencing).
    sequences: dict[str, ChannelSequence] = field(default_factory=dict)
    # Client frames waiting while the server works for this connection (it starts, or a
    # publish awaits its answer); None when frames are answered as they come.
    inbox: list[str | bytes] | None = None
    waiter: asyncio.Future[None] | None = None  # set while waiting for the first frame
    # Whether this connection's routes (presence, channel counts) were written at connect:
    # only then may its channels' heads stand in for reading their backlog.
    routed: bool = True
    # The channels' heads read at connect (PushNode.load_channels), until begin_all uses them.
    heads: dict[str, int] | None = None

    @property
    def user_channel(self) -> str:
        return user_channel(self.user_id)

    @property
    def channels(self) -> list[str]:
        """The channels this connection receives: its inbox, the app's broadcast, its groups."""
        return [self.user_channel, BROADCAST, *sorted(self.groups)]

    @property
    def shared_channels(self) -> list[str]:
        return [BROADCAST, *sorted(self.groups)]

    def may_read(self, channel: str) -> bool:
        return channel in (self.user_channel, BROADCAST) or channel in self.groups

    def sequence(self, channel: str) -> ChannelSequence:
        sequence = self.sequences.get(channel)
        if sequence is None:
            sequence = self.sequences[channel] = ChannelSequence()
        return sequence

    @property
    def presence(self) -> Presence:
        return Presence(self.app_id, self.user_id, self.conn_id, self.device, self.since)


class LocalConnections:
    """Who reads what on this node. Channel reader counts are what the directory routes by."""

    def __init__(self) -> None:
        self._by_user: dict[tuple[str, str], set[Connection]] = {}
        self._by_channel: dict[ChannelKey, set[Connection]] = {}
        self._count = 0
        self._by_app: dict[str, int] = {}  # kept as connections come and go: heartbeats read it

    def __len__(self) -> int:
        return self._count

    def add(self, conn: Connection) -> None:
        self._by_user.setdefault((conn.app_id, conn.user_id), set()).add(conn)
        self._count += 1
        self._by_app[conn.app_id] = self._by_app.get(conn.app_id, 0) + 1
        for channel in conn.shared_channels:
            self._by_channel.setdefault((conn.app_id, channel), set()).add(conn)

    def remove(self, conn: Connection) -> list[ChannelKey]:
        """Forget the connection; returns the shared channels whose reader count changed
        (empty if it was not here)."""
        key = (conn.app_id, conn.user_id)
        conns = self._by_user.get(key)
        if not conns or conn not in conns:
            return []
        conns.discard(conn)
        if not conns:
            del self._by_user[key]
        self._count -= 1
        left = self._by_app[conn.app_id] - 1
        if left:
            self._by_app[conn.app_id] = left
        else:
            del self._by_app[conn.app_id]
        changed = []
        for channel in conn.shared_channels:
            self._unsubscribe(conn, channel)
            changed.append((conn.app_id, channel))
        return changed

    def subscribe(self, conn: Connection, channel: str) -> None:
        """A live connection starts reading a group channel (a join)."""
        conn.groups.add(channel)
        self._by_channel.setdefault((conn.app_id, channel), set()).add(conn)

    def unsubscribe(self, conn: Connection, channel: str) -> None:
        conn.groups.discard(channel)
        conn.sequences.pop(channel, None)
        conn.pending_starts.pop(channel, None)
        self._unsubscribe(conn, channel)

    def _unsubscribe(self, conn: Connection, channel: str) -> None:
        key = (conn.app_id, channel)
        readers = self._by_channel.get(key)
        if readers is not None:
            readers.discard(conn)
            if not readers:
                del self._by_channel[key]

    def by_app(self) -> dict[str, int]:
        """Connections per app, without walking them."""
        return dict(self._by_app)

    def of_user(self, app_id: str, user_id: str) -> set[Connection]:
        return self._by_user.get((app_id, user_id), set())

    def readers(self, app_id: str, channel: str) -> set[Connection]:
        return self._by_channel.get((app_id, channel), set())

    def channel_counts(self, keys: list[ChannelKey] | None = None) -> dict[ChannelKey, int]:
        """Readers per shared channel: of ``keys`` (0 for none left), else of every channel."""
        if keys is None:
            return {key: len(conns) for key, conns in self._by_channel.items()}
        return {key: len(self._by_channel.get(key, ())) for key in keys}

    def __iter__(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    def presences(self) -> list[Presence]:
        return [conn.presence for conn in self]


def write_framed(ws: Socket, data: bytes) -> bool:
    """Write already-framed bytes (``herald.framing``) to an open connection."""
    return ws.write_framed(data)
