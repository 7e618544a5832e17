"""The directory on Redis: one hash per user, one heartbeat key per node.

Layout (every name from ``herald.names.Names``):

- ``conns_key(app, user)``: hash conn_id -> ``[node_id, since, device]`` (compact JSON),
  without expiry: a connection is removed at disconnect, by the reaper after its node's
  heartbeat expired, or when its node restarts (``reset_node``);
- ``online_key(app)``: sorted set user_id -> online-until (epoch ms; ``ONLINE_UNTIL_REMOVED``
  now, a heartbeat deadline in earlier versions): who has been announced online. A user
  enters it with its first connection and leaves it with its last, each inside one Lua
  script (``herald.directory.scripts``), so online and offline reports alternate even
  when nodes race or crash;
- ``node_key(node)``: the node's heartbeat, ``SET ... PX ttl``; a node without it is dead,
  whatever the hashes still say. Refreshing it is the whole heartbeat (``beat``): O(1);
- ``nodes_key``: the set of every node id that registered (``live_nodes`` filters it);
- ``node_conns_key(node)`` / ``node_channels_key(node)``: what a node wrote, kept without
  expiry, so whoever reaps the node after a crash knows what to remove;
- ``channel_nodes_key(app, channel)``: hash node_id -> number of its readers;
- ``rate_key(app)``: the app's token bucket.

Reads never trust a route on its own: lookups check the heartbeat of every node they
found, so a crashed node stops being routed to when its heartbeat expires, not when the
last of its users' hashes does. Writes are idempotent re-assertions, which is what lets a
flushed Redis heal at the next heartbeat.

Three ways to reach Redis (``HERALD_REDIS_MODE``), the same commands in each:
- ``single``: one server (or a proxy in front of several), through a blocking pool;
- ``cluster``: a Redis Cluster through redis-py's cluster client, which keeps the slot map
  and follows MOVED and ASK. Every Lua script touches the keys of one app only, all with
  the ``{app}`` hash tag, so one slot; the pipelines are not transactions, so a pipeline
  may span slots (the client splits it per node) and the node-wide keys, which carry no
  tag, are only ever one key per command (``_alive``, ``_forget_node``). Scripts are
  loaded on every primary; a replica promoted by a failover does not have them, answers
  NOSCRIPT, and ``_execute`` loads them again;
- ``sentinel``: the primary that the sentinels name, asked again whenever a connection
  fails (a failover moved it); a demoted primary answering READONLY counts as a lost
  connection.
While a primary fails over, calls fail with ``Unavailable`` (callers retry: dispatch holds
its batch, push re-asserts at its next heartbeat) and succeed again once the replica has
taken over: a few seconds with a cluster node timeout of a few seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT, FieldT

from herald.adapters.directory import scripts
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
from herald.adapters.directory.scripts import Script
from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.names import Names

# The faults worth retrying: Redis unreachable, too slow, or still loading its data
# after a restart; a cluster or a sentinel setup in the middle of a failover (a slot
# without its primary yet, a primary demoted to replica, the cluster briefly down). Anything
# else (a wrong type, a script error, keys of several slots in one script) is a bug and
# surfaces.
RETRYABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,  # MaxConnectionsError and sentinel's MasterNotFoundError too
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,  # MasterDownError too
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.SlotNotCoveredError,
    redis_errors.RedisClusterUnreachableError,
)

# A directory call sits in the hot path of every message: fail fast and let the caller
# decide (dispatch requeues, push retries at the next heartbeat) rather than hang.
SOCKET_TIMEOUT_S = 3.0
POOL_SIZE = 64
POOL_WAIT_S = 3.0
# Cluster and sentinel pools do not block when full: an over-full pool fails the call
# (Unavailable), so they get more room than the single server's blocking pool.
OPEN_POOL_SIZE = 256
ALIVE_CACHE_S = 1.0

# How long a reaper's claim on a dead node lasts: long enough to finish, short enough
# that a reaper dying half-way leaves the rest to the next one soon.
REAP_CLAIM_S = 60.0

# The online set's score for a user whose connections do not expire (epoch ms, year
# 2286): above any "now", so readers of earlier versions, which took users with a
# future score as online, still list them.
ONLINE_UNTIL_REMOVED = 10**13

User = tuple[str, str]  # (app_id, user_id)


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    try:
        yield
    except RETRYABLE as exc:
        raise Unavailable(f"redis unavailable while {doing}: {exc}") from exc


def _ttl_ms(ttl_s: float) -> int:
    # Redis rejects a zero expiry; a sub-millisecond TTL means "expire at once" anyway.
    return max(1, int(ttl_s * 1000))


def _encode_conn(node_id: str, conn: Presence) -> str:
    return codec.dumps_text([node_id, conn.since, conn.device])


def _decode_conn(value: str) -> tuple[str, float, str | None]:
    """(node_id, since, device) of a conns hash value. A bare node id is the layout before
    presence carried device and since: still routable during a rolling upgrade."""
    if not value.startswith("["):
        return value, 0.0, None
    node_id, since, device = codec.loads(value)
    return node_id, since, device


AnyPipeline = Pipeline | ClusterPipeline


def _evalsha(pipe: AnyPipeline, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> None:
    # EVALSHA queued straight into the pipeline: redis-py's registered scripts would add a
    # SCRIPT EXISTS round trip to every pipeline that runs one; ``_execute`` loads instead.
    pipe.evalsha(script.sha, len(keys), *keys, *args)


def _by_user(conns: Sequence[Presence]) -> dict[User, list[Presence]]:
    grouped: dict[User, list[Presence]] = {}
    for conn in conns:
        grouped.setdefault((conn.app_id, conn.user_id), []).append(conn)
    return grouped


def _pair(app_id: str, name: str) -> str:
    # The value format of node_conns_key and node_channels_key: app ids hold no tab.
    return f"{app_id}\t{name}"


def _unpair(value: str) -> tuple[str, str]:
    app_id, name = value.split("\t", 1)
    return app_id, name


class RedisDirectory(Directory):
    def __init__(
        self,
        url: str | None,
        names: Names,
        *,
        mode: str = "single",
        sentinels: Sequence[tuple[str, int]] = (),
        master: str = "",
    ) -> None:
        if mode not in ("single", "cluster", "sentinel"):
            raise ValueError(f"unknown Redis mode {mode!r}")
        if mode != "sentinel" and not url:
            raise ValueError(f"Redis mode {mode} needs a URL")
        if mode == "sentinel" and not (sentinels and master):
            raise ValueError("sentinel mode needs the sentinels and the primary's name")
        self._url = url
        self._mode = mode
        self._sentinels = list(sentinels)
        self._master = master
        self._names = names
        self._client: Any = None  # aioredis.Redis or RedisCluster: the same commands
        self._sentinel_clients: list[aioredis.Redis] = []
        # Routing lookups remember for ALIVE_CACHE_S which nodes had a heartbeat key: the
        # second round trip of every lookup otherwise, for an answer that changes once per
        # node death. A node that just died keeps getting routes that long on top of its
        # heartbeat TTL; its clients resume elsewhere from the store either way.
        self._alive_until: dict[str, float] = {}

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisDirectory used before start()")
        return self._client

    def _connect(self) -> Any:
        # One quick retry heals a pooled socket that a Redis restart left dead, without
        # stretching an outage into a long wait.
        common: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT_S,
            "socket_connect_timeout": SOCKET_TIMEOUT_S,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            "decode_responses": True,
        }
        if self._mode == "cluster":
            assert self._url is not None
            return RedisCluster.from_url(self._url, max_connections=OPEN_POOL_SIZE, **common)
        if self._mode == "sentinel":
            # The URL, when given, brings credentials and the database; the sentinels the address.
            given = dict(parse_url(self._url)) if self._url else {}
            auth: dict[str, Any] = {key: given[key] for key in ("username", "password", "db") if key in given}
            sentinels = Sentinel(
                self._sentinels,
                sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S},
                **common,
                **auth,
            )
            self._sentinel_clients = list(sentinels.sentinels)
            return sentinels.master_for(self._master, max_connections=OPEN_POOL_SIZE)
        # A blocking pool bounds the connections of a single server.
        assert self._url is not None
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url, max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **common
        )
        return aioredis.Redis.from_pool(pool)

    async def start(self) -> None:
        self._client = self._connect()
        try:
            await self.ping()
            with _unavailable("loading scripts"):
                await self._load_scripts()
        except Unavailable:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(*RETRYABLE):
                await client.aclose()
        clients, self._sentinel_clients = self._sentinel_clients, []
        for sentinel in clients:
            with contextlib.suppress(*RETRYABLE):
                await sentinel.aclose()

    async def ping(self) -> None:
        with _unavailable("pinging"):
            await self._redis.ping()

    # Connections --------------------------------------------------------------
    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        # The node is evidently alive when it accepts a connection: marking it so makes a
        # new connection routable even before the node's first heartbeat.
        ttl_ms = _ttl_ms(ttl_s)
        users = _by_user(conns)

        def build(pipe: AnyPipeline) -> None:
            pipe.set(self._names.node_key(node_id), node_id, px=ttl_ms)
            pipe.sadd(self._names.nodes_key, node_id)
            for (app_id, user_id), presences in users.items():
                fields: list[str] = []
                for conn in presences:
                    fields += [conn.conn_id, _encode_conn(node_id, conn)]
                keys = [self._names.conns_key(app_id, user_id), self._names.online_key(app_id)]
                _evalsha(pipe, scripts.ADD_CONNECTIONS, keys, [user_id, ONLINE_UNTIL_REMOVED, *fields])
            if users:
                pipe.hset(self._names.node_conns_key(node_id), mapping=self._node_conns(conns))

        with _unavailable("adding connections"):
            results = await self._execute(build)
        firsts = results[2 : 2 + len(users)]
        return [presences[0] for presences, first in zip(users.values(), firsts, strict=True) if first]

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        users = _by_user(conns)
        if not users:
            return []

        def build(pipe: AnyPipeline) -> None:
            for (app_id, user_id), presences in users.items():
                self._remove(pipe, app_id, user_id, [conn.conn_id for conn in presences])
            pipe.hdel(self._names.node_conns_key(node_id), *(conn.conn_id for conn in conns))

        with _unavailable("removing connections"):
            results = await self._execute(build)
        lasts = results[: len(users)]
        return [presences[-1] for presences, last in zip(users.values(), lasts, strict=True) if last]

    async def beat(self, node_id: str, ttl_s: float) -> Beat:
        """Three commands in one round trip, whatever the node holds: its heartbeat key
        (``GET`` says whether it was still there), its registration, and the size of its
        record of connections, which the reaper deletes and a flush loses."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.node_key(node_id), node_id, px=_ttl_ms(ttl_s), get=True)
        pipe.sadd(self._names.nodes_key, node_id)
        pipe.hlen(self._names.node_conns_key(node_id))
        with _unavailable("beating"):
            previous, _, recorded = await pipe.execute()
        return Beat(previous is not None, int(recorded))

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        """Plain pipelined writes, no scripts: this re-asserts what is already announced, so
        it reports nobody (a flushed Redis does not make users "come online")."""
        ttl_ms = _ttl_ms(ttl_s)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.node_key(node_id), node_id, px=ttl_ms, get=True)
        pipe.sadd(self._names.nodes_key, node_id)
        by_app: dict[str, dict[str, int]] = {}
        for (app_id, user_id), presences in _by_user(conns).items():
            key = self._names.conns_key(app_id, user_id)
            pipe.hset(key, mapping={conn.conn_id: _encode_conn(node_id, conn) for conn in presences})
            pipe.persist(key)
            by_app.setdefault(app_id, {})[user_id] = ONLINE_UNTIL_REMOVED
        for app_id, users in by_app.items():
            pipe.zadd(self._names.online_key(app_id), users, gt=True)
        if conns:
            # Additive: a connection removed meanwhile lingers here at worst, and removing
            # it again when reaping is a no-op.
            pipe.hset(self._names.node_conns_key(node_id), mapping=self._node_conns(conns))
        with _unavailable("refreshing a node"):
            results = await pipe.execute()
        return results[0] is not None

    async def reset_node(self, node_id: str) -> list[Presence]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._names.node_conns_key(node_id))
        pipe.smembers(self._names.node_channels_key(node_id))
        with _unavailable("resetting a node"):
            recorded, channels = await pipe.execute()
            return await self._reap({node_id: (recorded, channels)})

    async def remove_node(self, node_id: str, conns: Sequence[Presence]) -> None:
        """Routing only: the online set is left alone. A draining node reports its users
        offline with ``remove_connections`` first; a node that merely stepped out of routing
        re-asserts its connections when back, and its users never went offline."""
        self._alive_until.pop(node_id, None)
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(self._names.node_key(node_id))
        pipe.srem(self._names.nodes_key, node_id)
        pipe.hgetall(self._names.node_conns_key(node_id))
        pipe.smembers(self._names.node_channels_key(node_id))
        with _unavailable("removing a node"):
            _, _, recorded, channels = await pipe.execute()
            users: dict[User, set[str]] = {}
            for conn_id, pair in recorded.items():
                users.setdefault(_unpair(pair), set()).add(conn_id)
            for conn in conns:
                users.setdefault((conn.app_id, conn.user_id), set()).add(conn.conn_id)
            pipe = self._redis.pipeline(transaction=False)
            for (app_id, user_id), conn_ids in users.items():
                pipe.hdel(self._names.conns_key(app_id, user_id), *conn_ids)
            self._forget_node(pipe, node_id, channels)
            await pipe.execute()

    # Routing --------------------------------------------------------------------
    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        # Fields of dead nodes are skipped, not deleted: the reaper removes them, and only
        # it may, since it reports the users that this leaves without connections.
        unique = list(dict.fromkeys(recipients))
        if not unique:
            return {}
        with _unavailable("looking up routes"):
            routes = await self._hgetall_each([self._names.conns_key(app_id, user_id) for app_id, user_id in unique])
            by_user = [{_decode_conn(value)[0] for value in route.values()} for route in routes]
            alive = await self._alive_for_routing(set().union(*by_user))
        result: dict[tuple[str, str], set[str]] = {}
        for recipient, nodes in zip(unique, by_user, strict=True):
            live = nodes & alive
            if live:
                result[recipient] = live
        return result

    async def live_nodes(self) -> list[str]:
        with _unavailable("listing nodes"):
            registered = sorted(await self._redis.smembers(self._names.nodes_key))
            alive = await self._alive(registered)
        return [node for node in registered if node in alive]

    async def reap_dead_nodes(self) -> list[Presence]:
        with _unavailable("reaping dead nodes"):
            registered = sorted(await self._redis.smembers(self._names.nodes_key))
            alive = await self._alive(registered)
            dead = [node for node in registered if node not in alive]
            if not dead:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for node in dead:
                pipe.set(self._names.reap_key(node), "1", nx=True, px=_ttl_ms(REAP_CLAIM_S))
            claimed = [node for node, won in zip(dead, await pipe.execute(), strict=True) if won]
            if not claimed:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for node in claimed:
                pipe.exists(self._names.node_key(node))
                pipe.hgetall(self._names.node_conns_key(node))
                pipe.smembers(self._names.node_channels_key(node))
            read = await pipe.execute()
            return await self._reap(
                {
                    node: (recorded, channels)
                    for node, back, recorded, channels in zip(claimed, read[::3], read[1::3], read[2::3], strict=True)
                    # A node whose heartbeat came back since the listing is left alone.
                    if not back
                }
            )

    async def _reap(self, nodes: Mapping[str, tuple[dict[str, str], set[str]]]) -> list[Presence]:
        """Remove the dead nodes' connections and routes; report the users left without any.

        The reports carry no device or since: those lived in the user's hash, and only the
        node's own record (conn id -> user) is read here.
        """
        users: dict[User, list[str]] = {}
        for recorded, _ in nodes.values():
            for conn_id, pair in recorded.items():
                users.setdefault(_unpair(pair), []).append(conn_id)

        def build(pipe: AnyPipeline) -> None:
            for (app_id, user_id), conn_ids in users.items():
                self._remove(pipe, app_id, user_id, conn_ids)
            for node, (_, channels) in nodes.items():
                self._forget_node(pipe, node, channels)

        lasts = (await self._execute(build))[: len(users)]
        return [
            Presence(app_id, user_id, conn_ids[-1])
            for ((app_id, user_id), conn_ids), last in zip(users.items(), lasts, strict=True)
            if last
        ]

    # Presence queries -------------------------------------------------------------
    async def connections_of(self, app_id: str, user_id: str) -> list[Located]:
        with _unavailable("listing a user's connections"):
            route = await self._redis.hgetall(self._names.conns_key(app_id, user_id))
            decoded = {conn_id: _decode_conn(value) for conn_id, value in route.items()}
            alive = await self._alive(sorted({node for node, _, _ in decoded.values()}))
        located = [
            Located(conn_id, node, device, since) for conn_id, (node, since, device) in decoded.items() if node in alive
        ]
        return sorted(located, key=lambda conn: (conn.since, conn.conn_id))

    async def online(self, app_id: str, user_ids: Sequence[str] | None, limit: int) -> dict[str, int]:
        with _unavailable("counting online users"):
            if user_ids is not None:
                return await self._live_counts(app_id, list(dict.fromkeys(user_ids)))
            if limit <= 0:
                return {}
            now_ms = int(time.time() * 1000)
            candidates = sorted(await self._redis.zrangebyscore(self._names.online_key(app_id), f"({now_ms}", "+inf"))
            result: dict[str, int] = {}
            # Users in the set whose connections are all on dead nodes are skipped, so read
            # in chunks until ``limit`` users count or the candidates run out.
            for start in range(0, len(candidates), limit):
                counts = await self._live_counts(app_id, candidates[start : start + limit])
                for user_id, count in counts.items():
                    result[user_id] = count
                    if len(result) == limit:
                        return result
            return result

    async def _live_counts(self, app_id: str, user_ids: list[str]) -> dict[str, int]:
        if not user_ids:
            return {}
        routes = await self._hgetall_each([self._names.conns_key(app_id, user_id) for user_id in user_ids])
        nodes = [[_decode_conn(value)[0] for value in route.values()] for route in routes]
        alive = await self._alive(sorted({node for user_nodes in nodes for node in user_nodes}))
        counts = {
            user_id: sum(node in alive for node in user_nodes)
            for user_id, user_nodes in zip(user_ids, nodes, strict=True)
        }
        return {user_id: count for user_id, count in counts.items() if count}

    # Channel routes -----------------------------------------------------------------
    async def set_channel_counts(self, node_id: str, counts: Mapping[ChannelKey, int], ttl_s: float) -> None:
        if not counts:
            return
        ttl_ms = _ttl_ms(ttl_s)
        pipe = self._redis.pipeline(transaction=False)
        reading: list[str] = []
        stopped: list[str] = []
        for (app_id, channel), count in counts.items():
            key = self._names.channel_nodes_key(app_id, channel)
            if count > 0:
                pipe.hset(key, node_id, count)
                reading.append(_pair(app_id, channel))
            else:
                pipe.hdel(key, node_id)
                stopped.append(_pair(app_id, channel))
            pipe.pexpire(key, ttl_ms)
        channels_key = self._names.node_channels_key(node_id)
        if reading:
            pipe.sadd(channels_key, *reading)
        if stopped:
            pipe.srem(channels_key, *stopped)
        with _unavailable("writing channel counts"):
            await pipe.execute()

    async def nodes_for_channels(self, channels: Sequence[ChannelKey]) -> dict[ChannelKey, set[str]]:
        unique = list(dict.fromkeys(channels))
        if not unique:
            return {}
        with _unavailable("looking up channel routes"):
            routes = await self._hgetall_each([self._names.channel_nodes_key(app, channel) for app, channel in unique])
            readers = [{node for node, count in route.items() if int(count) > 0} for route in routes]
            alive = await self._alive_for_routing(set().union(*readers))
        result: dict[ChannelKey, set[str]] = {}
        for channel, nodes in zip(unique, readers, strict=True):
            live = nodes & alive
            if live:
                result[channel] = live
        return result

    # Rate limits --------------------------------------------------------------------
    async def take(self, app_id: str, cost: int, rate_per_s: float, burst: int) -> RateDecision:
        if free_of_charge(cost, rate_per_s, burst):
            return RateDecision(True, 0.0)
        with _unavailable("taking rate tokens"):
            [(allowed, retry_after)] = await self._execute(
                lambda pipe: _evalsha(pipe, scripts.TAKE, [self._names.rate_key(app_id)], [cost, rate_per_s, burst])
            )
        return RateDecision(bool(allowed), float(retry_after))

    # Helpers ------------------------------------------------------------------------
    async def _alive_for_routing(self, nodes: set[str]) -> set[str]:
        """``_alive`` through a short cache of positive answers (never of deaths: a node
        seen dead is asked again next time)."""
        now = time.monotonic()
        known = {node for node in nodes if self._alive_until.get(node, 0.0) > now}
        unknown = sorted(nodes - known)
        if not unknown:
            return known
        alive = await self._alive(unknown)
        for node in alive:
            self._alive_until[node] = now + ALIVE_CACHE_S
        if len(self._alive_until) > 4 * len(nodes) + 1024:
            self._alive_until = {node: until for node, until in self._alive_until.items() if until > now}
        return known | alive

    async def _alive(self, nodes: Sequence[str]) -> set[str]:
        # EXISTS per key in a pipeline rather than one MGET: node keys carry no common hash
        # tag, so a multi-key command would cross slots on a Redis Cluster.
        if not nodes:
            return set()
        pipe = self._redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._names.node_key(node))
        flags = await pipe.execute()
        return {node for node, exists in zip(nodes, flags, strict=True) if exists}

    async def _hgetall_each(self, keys: Sequence[str]) -> list[dict[str, str]]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        rows: list[dict[str, str]] = await pipe.execute()
        return rows

    async def _execute(self, build: Callable[[AnyPipeline], object]) -> list[Any]:
        """One pipelined round trip. If the server forgot the scripts (restarted, SCRIPT
        FLUSH), load them and run the pipeline once more: a refused EVALSHA ran nothing and
        every other command in these pipelines is an idempotent write or a read."""
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            build(pipe)
            try:
                results: list[Any] = await pipe.execute()
                return results
            except redis_errors.NoScriptError:
                if attempt:
                    raise
                await self._load_scripts()
        raise AssertionError("unreachable")

    async def _load_scripts(self) -> None:
        if self._mode == "cluster":
            # SCRIPT LOAD goes to every primary (the cluster client's routing for it); it
            # cannot go in a cluster pipeline.
            for script in scripts.ALL:
                await self._redis.script_load(script.source)
            return
        pipe = self._redis.pipeline(transaction=False)
        for script in scripts.ALL:
            pipe.script_load(script.source)
        await pipe.execute()

    def _remove(self, pipe: AnyPipeline, app_id: str, user_id: str, conn_ids: Sequence[str]) -> None:
        keys = [self._names.conns_key(app_id, user_id), self._names.online_key(app_id)]
        _evalsha(pipe, scripts.REMOVE_CONNECTIONS, keys, [user_id, *conn_ids])

    # Operations ---------------------------------------------------------------------
    async def report_node(self, report: NodeReport, ttl_s: float) -> None:
        """One hash for every node's report; each carries its own deadline, and readers drop
        the stale ones, since a hash field cannot expire on its own in Redis 7.0."""
        value = {
            "connections": report.connections,
            "by_app": report.by_app,
            "queue_depth": report.queue_depth,
            "at_ms": report.at_ms,
            "until_ms": int(time.time() * 1000) + _ttl_ms(ttl_s),
        }
        with _unavailable("reporting a node"):
            await self._redis.hset(self._names.node_reports_key, report.node_id, codec.dumps_text(value))

    async def node_reports(self) -> list[NodeReport]:
        with _unavailable("reading node reports"):
            stored = await self._redis.hgetall(self._names.node_reports_key)
            now_ms = int(time.time() * 1000)
            reports, stale = [], []
            for node_id, raw in sorted(stored.items()):
                value = codec.loads(raw)
                if value.get("until_ms", 0) <= now_ms:
                    stale.append(node_id)
                    continue
                reports.append(
                    NodeReport(node_id, value["connections"], value["by_app"], value["queue_depth"], value["at_ms"])
                )
            if stale:
                await self._redis.hdel(self._names.node_reports_key, *stale)
        return reports

    async def count_messages(self, counts: Mapping[str, int], at_s: int) -> None:
        if not counts:
            return
        key = self._names.message_counts_key(at_s)
        pipe = self._redis.pipeline(transaction=False)
        for app_id, count in counts.items():
            pipe.hincrby(key, app_id, count)
        pipe.expire(key, COUNTS_KEPT_S)
        with _unavailable("counting messages"):
            await pipe.execute()

    async def message_rates(self, window_s: int, now_s: int) -> dict[str, float]:
        pipe = self._redis.pipeline(transaction=False)
        for second in range(now_s - window_s, now_s):
            pipe.hgetall(self._names.message_counts_key(second))
        with _unavailable("reading message rates"):
            seconds = await pipe.execute()
        return average_rates(seconds, window_s)

    def _forget_node(self, pipe: AnyPipeline, node_id: str, channels: set[str]) -> None:
        """Queue the removal of a node's channel routes and its own bookkeeping."""
        for pair in channels:
            app_id, channel = _unpair(pair)
            pipe.hdel(self._names.channel_nodes_key(app_id, channel), node_id)
        # Two DELs, not one: the keys carry no common hash tag (Redis Cluster).
        pipe.delete(self._names.node_conns_key(node_id))
        pipe.delete(self._names.node_channels_key(node_id))
        pipe.srem(self._names.nodes_key, node_id)

    def _node_conns(self, conns: Sequence[Presence]) -> dict[FieldT, EncodableT]:
        return {conn.conn_id: _pair(conn.app_id, conn.user_id) for conn in conns}
