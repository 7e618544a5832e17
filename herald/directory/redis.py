"""The directory on Redis: one hash per user, one heartbeat key per node.

Layout (every name from ``herald.names.Names``):

- ``conns_key(app, user)``: hash conn_id -> node_id, expiring ``ttl_s`` after the last
  connect or heartbeat of any node holding one of the user's connections;
- ``node_key(node)``: the node's heartbeat, ``SET ... PX ttl``; a node without it is dead,
  whatever the hashes still say;
- ``nodes_key``: the set of every node id that registered (``live_nodes`` filters it).

Reads never trust a route on its own: ``nodes_for`` checks the heartbeat of every node it
found, so a crashed node stops being routed to when its heartbeat expires, not when the
last of its users' hashes does. Writes are idempotent re-assertions, which is what lets a
flushed Redis heal at the next heartbeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from herald.directory.base import Directory, Presence
from herald.errors import Unavailable
from herald.names import Names

# The faults worth retrying: Redis unreachable, too slow, or still loading its data
# after a restart. Anything else (a wrong type, a script error) is a bug and surfaces.
RETRYABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
)

# A directory call sits in the hot path of every message: fail fast and let the caller
# decide (dispatch requeues, push retries at the next heartbeat) rather than hang.
SOCKET_TIMEOUT_S = 3.0
POOL_SIZE = 64
POOL_WAIT_S = 3.0


@contextlib.contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    try:
        yield
    except RETRYABLE as exc:
        raise Unavailable(f"redis unavailable while {doing}: {exc}") from exc


def _ttl_ms(ttl_s: float) -> int:
    # Redis rejects a zero expiry; a sub-millisecond TTL means "expire at once" anyway.
    return max(1, int(ttl_s * 1000))


class RedisDirectory(Directory):
    def __init__(self, url: str, names: Names) -> None:
        self._url = url
        self._names = names
        self._client: aioredis.Redis | None = None

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisDirectory used before start()")
        return self._client

    async def start(self) -> None:
        # A blocking pool bounds the connections; one quick retry heals a pooled socket
        # that a Redis restart left dead, without stretching an outage into a long wait.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            decode_responses=True,
        )
        self._client = aioredis.Redis.from_pool(pool)
        try:
            await self.ping()
        except Unavailable:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(*RETRYABLE):
                await client.aclose()

    async def ping(self) -> None:
        with _unavailable("pinging"):
            await self._redis.ping()

    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> None:
        # The node is evidently alive when it accepts a connection: marking it so makes a
        # new connection routable even before the node's first heartbeat.
        with _unavailable("adding connections"):
            await self._assert(node_id, conns, ttl_s)

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> None:
        if not conns:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, conn_ids in self._conn_ids_by_key(conns).items():
            pipe.hdel(key, *conn_ids)
        with _unavailable("removing connections"):
            await pipe.execute()

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        with _unavailable("refreshing a node"):
            return await self._assert(node_id, conns, ttl_s)

    async def remove_node(self, node_id: str, conns: Sequence[Presence]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(self._names.node_key(node_id))
        pipe.srem(self._names.nodes_key, node_id)
        for key, conn_ids in self._conn_ids_by_key(conns).items():
            pipe.hdel(key, *conn_ids)
        with _unavailable("removing a node"):
            await pipe.execute()

    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        unique = list(dict.fromkeys(recipients))
        if not unique:
            return {}
        keys = [self._names.conns_key(app_id, user_id) for app_id, user_id in unique]
        with _unavailable("looking up routes"):
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            routes: list[dict[str, str]] = await pipe.execute()
            found = sorted({node for route in routes for node in route.values()})
            if not found:
                return {}
            alive = await self._alive(found)
            result: dict[tuple[str, str], set[str]] = {}
            dead: dict[str, list[str]] = {}
            for recipient, key, route in zip(unique, keys, routes, strict=True):
                nodes = {node for node in route.values() if node in alive}
                if nodes:
                    result[recipient] = nodes
                stale = [conn_id for conn_id, node in route.items() if node not in alive]
                if stale:
                    dead[key] = stale
            if dead:
                await self._forget(dead)
        return result

    async def live_nodes(self) -> list[str]:
        with _unavailable("listing nodes"):
            registered = sorted(await self._redis.smembers(self._names.nodes_key))
            if not registered:
                return []
            alive = await self._alive(registered)
        return [node for node in registered if node in alive]

    async def _assert(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        """Heartbeat and (re-)write the node's connections in one round trip; True if the
        node's heartbeat key was still there (SET ... GET returns the old value)."""
        ttl_ms = _ttl_ms(ttl_s)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.node_key(node_id), node_id, px=ttl_ms, get=True)
        pipe.sadd(self._names.nodes_key, node_id)
        for key, conn_ids in self._conn_ids_by_key(conns).items():
            pipe.hset(key, mapping=dict.fromkeys(conn_ids, node_id))
            pipe.pexpire(key, ttl_ms)
        results = await pipe.execute()
        return results[0] is not None

    async def _alive(self, nodes: Sequence[str]) -> set[str]:
        # EXISTS per key in a pipeline rather than one MGET: node keys carry no common hash
        # tag, so a multi-key command would cross slots on a Redis Cluster.
        pipe = self._redis.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._names.node_key(node))
        flags = await pipe.execute()
        return {node for node, exists in zip(nodes, flags, strict=True) if exists}

    async def _forget(self, stale: dict[str, list[str]]) -> None:
        """Drop fields pointing at dead nodes so later lookups stop paying for them.

        Safe against a node that was only late: its next heartbeat writes them back.
        """
        pipe = self._redis.pipeline(transaction=False)
        for key, conn_ids in stale.items():
            pipe.hdel(key, *conn_ids)
        await pipe.execute()

    def _conn_ids_by_key(self, conns: Sequence[Presence]) -> dict[str, list[str]]:
        by_key: dict[str, list[str]] = {}
        for conn in conns:
            by_key.setdefault(self._names.conns_key(conn.app_id, conn.user_id), []).append(conn.conn_id)
        return by_key
