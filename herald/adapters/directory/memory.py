"""The directory in-process, for standalone mode: the Redis layout as dicts with deadlines.

It keeps the Redis semantics on purpose (a per-user table of connections that stay until
removed, a heartbeat deadline per node, routes trusted only while their node's heartbeat
lives, an online set that a user enters with its first connection and leaves with its
last), so the one contract test suite describes both and standalone behaves like a
cluster of one.
Expiry is checked on read against ``time.monotonic()``; each heartbeat also sweeps what
expired, so a long-running process does not keep users nobody asks about. No method
awaits anything, so each runs whole: that is the atomicity Redis gets from its scripts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from herald.adapters.directory.base import (
    COUNTS_KEPT_S,
    Beat,
    ChannelKey,
    Directory,
    Located,
    NodeReport,
    Presence,
    RateDecision,
    average_rates,
    free_of_charge,
)

User = tuple[str, str]  # (app_id, user_id)

# As in Redis: a reaper's claim on a dead node, so a second sweep soon after is a no-op.
REAP_CLAIM_S = 60.0


@dataclass(frozen=True, slots=True)
class _Conn:
    node_id: str
    device: str | None
    since: float


@dataclass(slots=True)
class _Routes:
    """One user's connections (the conns hash). ``expires_at`` is infinite, as the hash has
    no TTL; an entry without connections is gone."""

    expires_at: float
    conns: dict[str, _Conn] = field(default_factory=dict)


@dataclass(slots=True)
class _Readers:
    """One channel's reader counts per node and when they all expire."""

    expires_at: float
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


def _take_tokens(bucket: _Bucket | None, now: float, cost: int, rate_per_s: float, burst: int) -> tuple[bool, float]:
    """The token bucket's arithmetic, the same as ``scripts.TAKE``: (allowed, retry after).

    A take needs min(cost, burst) tokens, so one larger than the burst waits for a full
    bucket and leaves it in debt rather than being refused forever. Mutates ``bucket``
    only when allowed.
    """
    tokens = float(burst) if bucket is None else min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate_per_s)
    need = min(cost, burst)
    if tokens < need:
        return False, (need - tokens) / rate_per_s
    if bucket is not None:
        bucket.tokens, bucket.at = tokens - cost, now
    return True, 0.0


def _by_user(conns: Sequence[Presence]) -> dict[User, list[Presence]]:
    grouped: dict[User, list[Presence]] = {}
    for conn in conns:
        grouped.setdefault((conn.app_id, conn.user_id), []).append(conn)
    return grouped


class MemoryDirectory(Directory):
    def __init__(self) -> None:
        self._users: dict[User, _Routes] = {}
        self._online: dict[str, dict[str, float]] = {}  # app_id -> user_id -> online until
        self._heartbeats: dict[str, float] = {}  # node_id -> deadline
        self._registered: set[str] = set()
        self._node_conns: dict[str, dict[str, User]] = {}
        self._node_channels: dict[str, set[ChannelKey]] = {}
        self._channels: dict[ChannelKey, _Readers] = {}
        self._claims: dict[str, float] = {}  # node_id -> reap claim deadline
        self._buckets: dict[str, _Bucket] = {}
        self._reports: dict[str, tuple[NodeReport, float]] = {}  # node_id -> (report, kept until)
        self._counts: dict[int, dict[str, int]] = {}  # second -> app_id -> messages

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.clear()

    async def ping(self) -> None:
        return None

    def clear(self) -> None:
        """Forget everything, as a flushed or restarted Redis would."""
        for table in (
            self._users,
            self._online,
            self._heartbeats,
            self._node_conns,
            self._node_channels,
            self._channels,
            self._claims,
            self._buckets,
        ):
            table.clear()
        self._registered.clear()

    # Connections --------------------------------------------------------------
    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        # As with Redis: accepting a connection proves the node alive, so it is routable
        # before its first heartbeat.
        now = time.monotonic()
        users = _by_user(conns)
        firsts = [presences[0] for user, presences in users.items() if self._live_routes(user, now) is None]
        self._assert(node_id, conns, ttl_s, now)
        return firsts

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        now = time.monotonic()
        recorded = self._node_conns.get(node_id, {})
        for conn in conns:
            recorded.pop(conn.conn_id, None)
        return [
            presences[-1]
            for user, presences in _by_user(conns).items()
            if self._forget_conns(user, [conn.conn_id for conn in presences], now)
        ]

    async def beat(self, node_id: str, ttl_s: float) -> Beat:
        now = time.monotonic()
        self._sweep(now)
        was_alive = self._alive(node_id, now)
        self._assert(node_id, [], ttl_s, now)
        return Beat(was_alive, len(self._node_conns.get(node_id, {})))

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        now = time.monotonic()
        self._sweep(now)
        was_alive = self._alive(node_id, now)
        self._assert(node_id, conns, ttl_s, now)
        return was_alive

    async def reset_node(self, node_id: str) -> list[Presence]:
        return self._forget_node_conns(node_id, time.monotonic())

    async def remove_node(self, node_id: str, conns: Sequence[Presence]) -> None:
        """Routing only, as in Redis: the online set is left to ``remove_connections``."""
        now = time.monotonic()
        self._heartbeats.pop(node_id, None)
        self._registered.discard(node_id)
        users = dict(self._node_conns.pop(node_id, {}))
        users.update({conn.conn_id: (conn.app_id, conn.user_id) for conn in conns})
        for conn_id, user in users.items():
            routes = self._live_routes(user, now)
            if routes is not None:
                routes.conns.pop(conn_id, None)
        self._forget_channels(node_id)

    # Routing --------------------------------------------------------------------
    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        now = time.monotonic()
        result: dict[tuple[str, str], set[str]] = {}
        for user in dict.fromkeys(recipients):
            routes = self._live_routes(user, now)
            if routes is None:
                continue
            nodes = {conn.node_id for conn in routes.conns.values() if self._alive(conn.node_id, now)}
            if nodes:
                result[user] = nodes
        return result

    async def live_nodes(self) -> list[str]:
        now = time.monotonic()
        return sorted(node for node in self._registered if self._alive(node, now))

    async def reap_dead_nodes(self) -> list[Presence]:
        now = time.monotonic()
        gone: list[Presence] = []
        for node_id in sorted(self._registered):
            if self._alive(node_id, now) or self._claims.get(node_id, 0.0) > now:
                continue
            self._claims[node_id] = now + REAP_CLAIM_S
            gone += self._forget_node_conns(node_id, now)
        return gone

    def _forget_node_conns(self, node_id: str, now: float) -> list[Presence]:
        """Remove what a node recorded, as ``RedisDirectory._reap``; the users left without
        connections, without device or since as in Redis."""
        gone: list[Presence] = []
        by_user: dict[User, list[str]] = {}
        for conn_id, user in self._node_conns.pop(node_id, {}).items():
            by_user.setdefault(user, []).append(conn_id)
        for (app_id, user_id), conn_ids in by_user.items():
            if self._forget_conns((app_id, user_id), conn_ids, now):
                gone.append(Presence(app_id, user_id, conn_ids[-1]))
        self._forget_channels(node_id)
        self._registered.discard(node_id)
        return gone

    # Presence queries -------------------------------------------------------------
    async def connections_of(self, app_id: str, user_id: str) -> list[Located]:
        now = time.monotonic()
        routes = self._live_routes((app_id, user_id), now)
        if routes is None:
            return []
        located = [
            Located(conn_id, conn.node_id, conn.device, conn.since)
            for conn_id, conn in routes.conns.items()
            if self._alive(conn.node_id, now)
        ]
        return sorted(located, key=lambda conn: (conn.since, conn.conn_id))

    async def online(self, app_id: str, user_ids: Sequence[str] | None, limit: int) -> dict[str, int]:
        now = time.monotonic()
        if user_ids is not None:
            counts = {user_id: self._live_count((app_id, user_id), now) for user_id in user_ids}
            return {user_id: count for user_id, count in counts.items() if count}
        result: dict[str, int] = {}
        if limit <= 0:
            return result
        announced = self._online.get(app_id, {})
        for user_id in sorted(user for user, until in announced.items() if until > now):
            count = self._live_count((app_id, user_id), now)
            if count:
                result[user_id] = count
                if len(result) == limit:
                    break
        return result

    def _live_count(self, user: User, now: float) -> int:
        routes = self._live_routes(user, now)
        return 0 if routes is None else sum(self._alive(conn.node_id, now) for conn in routes.conns.values())

    # Channel routes -----------------------------------------------------------------
    async def set_channel_counts(self, node_id: str, counts: Mapping[ChannelKey, int], ttl_s: float) -> None:
        now = time.monotonic()
        recorded = self._node_channels.setdefault(node_id, set())
        for channel, count in counts.items():
            readers = self._live_readers(channel, now)
            if count > 0:
                if readers is None:
                    readers = self._channels[channel] = _Readers(expires_at=now + ttl_s)
                readers.counts[node_id] = count
                recorded.add(channel)
            else:
                if readers is not None:
                    readers.counts.pop(node_id, None)
                recorded.discard(channel)
            if readers is not None:
                readers.expires_at = now + ttl_s  # like PEXPIRE: the latest writer's deadline

    async def nodes_for_channels(self, channels: Sequence[ChannelKey]) -> dict[ChannelKey, set[str]]:
        now = time.monotonic()
        result: dict[ChannelKey, set[str]] = {}
        for channel in dict.fromkeys(channels):
            readers = self._live_readers(channel, now)
            if readers is None:
                continue
            nodes = {node for node, count in readers.counts.items() if count > 0 and self._alive(node, now)}
            if nodes:
                result[channel] = nodes
        return result

    # Rate limits --------------------------------------------------------------------
    async def take(self, app_id: str, cost: int, rate_per_s: float, burst: int) -> RateDecision:
        if free_of_charge(cost, rate_per_s, burst):
            return RateDecision(True, 0.0)
        now = time.monotonic()
        bucket = self._buckets.get(app_id)
        allowed, retry_after = _take_tokens(bucket, now, cost, rate_per_s, burst)
        if allowed and bucket is None:
            self._buckets[app_id] = _Bucket(tokens=burst - cost, at=now)
        return RateDecision(allowed, retry_after)

    # Operations ---------------------------------------------------------------------
    async def report_node(self, report: NodeReport, ttl_s: float) -> None:
        self._reports[report.node_id] = (report, time.monotonic() + ttl_s)

    async def node_reports(self) -> list[NodeReport]:
        now = time.monotonic()
        for node_id in [node for node, (_, until) in self._reports.items() if until <= now]:
            del self._reports[node_id]
        return [report for _, (report, _) in sorted(self._reports.items())]

    async def count_messages(self, counts: Mapping[str, int], at_s: int) -> None:
        second = self._counts.setdefault(at_s, {})
        for app_id, count in counts.items():
            second[app_id] = second.get(app_id, 0) + count
        for old in [s for s in self._counts if s < at_s - COUNTS_KEPT_S]:
            del self._counts[old]

    async def message_rates(self, window_s: int, now_s: int) -> dict[str, float]:
        return average_rates((self._counts.get(second, {}) for second in range(now_s - window_s, now_s)), window_s)

    # Helpers ------------------------------------------------------------------------
    def _assert(self, node_id: str, conns: Sequence[Presence], ttl_s: float, now: float) -> None:
        self._heartbeats[node_id] = now + ttl_s
        self._registered.add(node_id)
        if not conns:
            return
        recorded = self._node_conns.setdefault(node_id, {})
        for conn in conns:
            user = (conn.app_id, conn.user_id)
            routes = self._live_routes(user, now)
            if routes is None:
                # As in Redis: connections stay until removed, not until a deadline.
                routes = self._users[user] = _Routes(expires_at=math.inf)
            routes.conns[conn.conn_id] = _Conn(node_id, conn.device, conn.since)
            self._online.setdefault(conn.app_id, {})[conn.user_id] = math.inf
            recorded[conn.conn_id] = user

    def _forget_conns(self, user: User, conn_ids: Sequence[str], now: float) -> bool:
        """Drop connections of one user; True if that left none and the user was still
        announced online (then it no longer is), as ``scripts.REMOVE_CONNECTIONS``."""
        routes = self._live_routes(user, now)
        if routes is not None:
            for conn_id in conn_ids:
                routes.conns.pop(conn_id, None)
            if routes.conns:
                return False
            del self._users[user]
        announced = self._online.get(user[0])
        if announced is None or user[1] not in announced:
            return False
        del announced[user[1]]
        if not announced:
            del self._online[user[0]]
        return True

    def _forget_channels(self, node_id: str) -> None:
        for channel in self._node_channels.pop(node_id, set()):
            readers = self._channels.get(channel)
            if readers is not None:
                readers.counts.pop(node_id, None)
                if not readers.counts:
                    del self._channels[channel]

    def _live_routes(self, user: User, now: float) -> _Routes | None:
        routes = self._users.get(user)
        if routes is None:
            return None
        if routes.expires_at <= now or not routes.conns:
            del self._users[user]
            return None
        return routes

    def _live_readers(self, channel: ChannelKey, now: float) -> _Readers | None:
        readers = self._channels.get(channel)
        if readers is None:
            return None
        if readers.expires_at <= now or not readers.counts:
            del self._channels[channel]
            return None
        return readers

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
        for channel in [channel for channel, readers in self._channels.items() if readers.expires_at <= now]:
            del self._channels[channel]
        for node_id in [node_id for node_id, until in self._claims.items() if until <= now]:
            del self._claims[node_id]
