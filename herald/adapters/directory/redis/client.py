"""The directory's connection to Redis, in any of its three modes, and what every part of it
shares: the faults worth retrying (``unavailable``), pipelines with scripts (``_execute``,
``evalsha``) and the heartbeat checks of nodes (``_alive``, with a short cache for routing).

The parts beside this module (connections, routing, presence, operations) each add their
methods on top of ``RedisClient``; directory.py puts them together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from herald.adapters.directory import scripts
from herald.adapters.directory.scripts import Script
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
# Users from which a lookup asks the apps' online sets first (one ZMSCORE per app) and
# reads the connection hashes of only those in them (``_in_online_sets``): a 1,000-user
# batch's HGETALL per recipient, mostly of users with no connection, was a sixth of
# collect's CPU per batch, and a connect storm's count of each new user's connections
# read one empty hash per handshake (counts screen from fewer users: ``presence``). Below it
# the extra round trip costs more than it saves.
SCREEN_FROM = 16


@contextlib.contextmanager
def unavailable(doing: str) -> Iterator[None]:
    try:
        yield
    except RETRYABLE as exc:
        raise Unavailable(f"redis unavailable while {doing}: {exc}") from exc


def ttl_in_ms(ttl_s: float) -> int:
    # Redis rejects a zero expiry; a sub-millisecond TTL means "expire at once" anyway.
    return max(1, int(ttl_s * 1000))


AnyPipeline = Pipeline | ClusterPipeline


def evalsha(pipe: AnyPipeline, script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> None:
    # EVALSHA queued straight into the pipeline: redis-py's registered scripts would add a
    # SCRIPT EXISTS round trip to every pipeline that runs one; ``_execute`` loads instead.
    pipe.evalsha(script.sha, len(keys), *keys, *args)


class RedisClient:
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
            with unavailable("loading scripts"):
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
        with unavailable("pinging"):
            await self._redis.ping()

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

    async def _in_online_sets(self, recipients: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The recipients their app's online set holds. A user with a connection is always
        in it: the connection's script adds both, and the user leaves the set only when its
        last connection's script finds the hash empty (``herald.adapters.directory.scripts``).
        Users of a dead node are still in it; the hashes and heartbeats sort them out."""
        by_app: dict[str, list[str]] = {}
        for app_id, user_id in recipients:
            by_app.setdefault(app_id, []).append(user_id)
        pipe = self._redis.pipeline(transaction=False)
        for app_id, users in by_app.items():
            pipe.zmscore(self._names.online_key(app_id), users)
        scores = await pipe.execute()
        held = {
            (app_id, user_id)
            for (app_id, users), found in zip(by_app.items(), scores, strict=True)
            for user_id, score in zip(users, found, strict=True)
            if score is not None
        }
        return [recipient for recipient in recipients if recipient in held]

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
