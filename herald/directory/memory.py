"""The directory in-process, for standalone mode: the Redis layout as dicts with deadlines.

It keeps the Redis semantics on purpose (a per-user table that expires as a whole, a
heartbeat deadline per node, routes trusted only while their node's heartbeat lives), so
the one contract test suite describes both and standalone behaves like a cluster of one.
Expiry is checked on read against ``time.monotonic()``; each heartbeat also sweeps what
expired, so a long-running process does not keep users nobody asks about.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from herald.directory.base import Directory, Presence

User = tuple[str, str]  # (app_id, user_id)


@dataclass(slots=True)
class _Routes:
    """One user's connections (conn_id -> node_id) and when they all expire."""

    expires_at: float
    nodes_by_conn: dict[str, str] = field(default_factory=dict)


class MemoryDirectory(Directory):
    def __init__(self) -> None:
        self._users: dict[User, _Routes] = {}
        self._heartbeats: dict[str, float] = {}  # node_id -> deadline
        self._registered: set[str] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.clear()

    async def ping(self) -> None:
        return None

    def clear(self) -> None:
        """Forget everything, as a flushed or restarted Redis would."""
        self._users.clear()
        self._heartbeats.clear()
        self._registered.clear()

    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> None:
        # As with Redis: accepting a connection proves the node alive, so it is routable
        # before its first heartbeat.
        self._assert(node_id, conns, ttl_s)

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> None:
        now = time.monotonic()
        for conn in conns:
            routes = self._live_routes((conn.app_id, conn.user_id), now)
            if routes is not None:
                routes.nodes_by_conn.pop(conn.conn_id, None)

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        now = time.monotonic()
        self._sweep(now)
        was_alive = self._alive(node_id, now)
        self._assert(node_id, conns, ttl_s)
        return was_alive

    async def remove_node(self, node_id: str, conns: Sequence[Presence]) -> None:
        self._heartbeats.pop(node_id, None)
        self._registered.discard(node_id)
        await self.remove_connections(node_id, conns)

    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        now = time.monotonic()
        result: dict[tuple[str, str], set[str]] = {}
        for user in dict.fromkeys(recipients):
            routes = self._live_routes(user, now)
            if routes is None:
                continue
            nodes = {node for node in routes.nodes_by_conn.values() if self._alive(node, now)}
            if nodes:
                result[user] = nodes
        return result

    async def live_nodes(self) -> list[str]:
        now = time.monotonic()
        return sorted(node for node in self._registered if self._alive(node, now))

    def _assert(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> None:
        now = time.monotonic()
        deadline = now + ttl_s
        self._heartbeats[node_id] = deadline
        self._registered.add(node_id)
        for conn in conns:
            user = (conn.app_id, conn.user_id)
            routes = self._live_routes(user, now)
            if routes is None:
                routes = self._users[user] = _Routes(expires_at=deadline)
            routes.nodes_by_conn[conn.conn_id] = node_id
            # Like PEXPIRE: the latest writer sets the deadline of the whole table.
            routes.expires_at = deadline

    def _live_routes(self, user: User, now: float) -> _Routes | None:
        routes = self._users.get(user)
        if routes is None:
            return None
        if routes.expires_at <= now or not routes.nodes_by_conn:
            del self._users[user]
            return None
        return routes

    def _alive(self, node_id: str, now: float) -> bool:
        deadline = self._heartbeats.get(node_id)
        if deadline is None:
            return False
        if deadline <= now:
            del self._heartbeats[node_id]
            return False
        return True

    def _sweep(self, now: float) -> None:
        for user in [user for user, routes in self._users.items() if routes.expires_at <= now]:
            del self._users[user]
