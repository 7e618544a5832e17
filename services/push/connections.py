"""This node's live connections, indexed by user, and what each has already been sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from herald.directory.base import Presence
from herald.sequencing import ChannelSequence


@dataclass(eq=False, slots=True)
class Connection:
    ws: ServerConnection
    conn_id: str
    app_id: str
    user_id: str
    device: str | None
    since: float = field(default_factory=time.time)
    closing: bool = False
    # Per channel: what was written and what waits (see herald.sequencing).
    sequences: dict[str, ChannelSequence] = field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        """The channels this connection receives."""
        return [f"user:{self.user_id}"]

    def may_read(self, channel: str) -> bool:
        return channel in self.channels

    def sequence(self, channel: str) -> ChannelSequence:
        sequence = self.sequences.get(channel)
        if sequence is None:
            sequence = self.sequences[channel] = ChannelSequence()
        return sequence

    @property
    def presence(self) -> Presence:
        return Presence(self.app_id, self.user_id, self.conn_id)


class LocalConnections:
    def __init__(self) -> None:
        self._by_user: dict[tuple[str, str], set[Connection]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, conn: Connection) -> None:
        self._by_user.setdefault((conn.app_id, conn.user_id), set()).add(conn)
        self._count += 1

    def remove(self, conn: Connection) -> bool:
        key = (conn.app_id, conn.user_id)
        conns = self._by_user.get(key)
        if not conns or conn not in conns:
            return False
        conns.discard(conn)
        if not conns:
            del self._by_user[key]
        self._count -= 1
        return True

    def of_user(self, app_id: str, user_id: str) -> set[Connection]:
        return self._by_user.get((app_id, user_id), set())

    def __iter__(self) -> Iterator[Connection]:
        for conns in list(self._by_user.values()):
            yield from list(conns)

    def presences(self) -> list[Presence]:
        return [conn.presence for conn in self]
