"""Connections in the Redis directory: adding and removing them, a node's heartbeat and its
re-assertion, and reaping the connections of nodes that died."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herald.adapters.directory import scripts
from herald.adapters.directory.base import Beat, Presence
from herald.adapters.directory.redis.client import AnyPipeline, RedisClient, evalsha, ttl_in_ms, unavailable
from herald.adapters.directory.redis.layout import (
    ONLINE_UNTIL_REMOVED,
    User,
    by_user,
    encode_conn,
    node_conns,
    unpair,
)

# Users whose connections one script call adds: a turn's handshakes of one app go in one
# call (the script is atomic, so Redis serves nothing else meanwhile: a few ms at most).
USERS_PER_ADD = 500
# How long a reaper's claim on a dead node lasts: long enough to finish, short enough
# that a reaper dying half-way leaves the rest to the next one soon.
REAP_CLAIM_S = 60.0


class RedisConnections(RedisClient):
    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        # The node is evidently alive when it accepts a connection: marking it so makes a
        # new connection routable even before the node's first heartbeat.
        ttl_ms = ttl_in_ms(ttl_s)
        calls = _add_calls(by_user(conns))

        def build(pipe: AnyPipeline) -> None:
            pipe.set(self._names.node_key(node_id), node_id, px=ttl_ms)
            pipe.sadd(self._names.nodes_key, node_id)
            for app_id, users in calls:
                keys = [self._names.online_key(app_id)]
                args: list[str | int] = [ONLINE_UNTIL_REMOVED]
                for (_, user_id), presences in users:
                    keys.append(self._names.conns_key(app_id, user_id))
                    args += [user_id, len(presences)]
                    for conn in presences:
                        args += [conn.conn_id, encode_conn(node_id, conn)]
                evalsha(pipe, scripts.ADD_CONNECTIONS, keys, args)
            if calls:
                pipe.hset(self._names.node_conns_key(node_id), mapping=node_conns(conns))

        with unavailable("adding connections"):
            results = await self._execute(build)
        firsts = [first for answer in results[2 : 2 + len(calls)] for first in answer]
        users = [presences for _, chunk in calls for _, presences in chunk]
        return [presences[0] for presences, first in zip(users, firsts, strict=True) if first]

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        users = by_user(conns)
        if not users:
            return []

        def build(pipe: AnyPipeline) -> None:
            for (app_id, user_id), presences in users.items():
                self._remove(pipe, app_id, user_id, [conn.conn_id for conn in presences])
            pipe.hdel(self._names.node_conns_key(node_id), *(conn.conn_id for conn in conns))

        with unavailable("removing connections"):
            results = await self._execute(build)
        lasts = results[: len(users)]
        return [presences[-1] for presences, last in zip(users.values(), lasts, strict=True) if last]

    async def beat(self, node_id: str, ttl_s: float) -> Beat:
        """Three commands in one round trip, whatever the node holds: its heartbeat key
        (``GET`` says whether it was still there), its registration, and the size of its
        record of connections, which the reaper deletes and a flush loses."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.node_key(node_id), node_id, px=ttl_in_ms(ttl_s), get=True)
        pipe.sadd(self._names.nodes_key, node_id)
        pipe.hlen(self._names.node_conns_key(node_id))
        with unavailable("beating"):
            previous, _, recorded = await pipe.execute()
        return Beat(previous is not None, int(recorded))

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        """Plain pipelined writes, no scripts: this re-asserts what is already announced, so
        it reports nobody (a flushed Redis does not make users "come online")."""
        ttl_ms = ttl_in_ms(ttl_s)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._names.node_key(node_id), node_id, px=ttl_ms, get=True)
        pipe.sadd(self._names.nodes_key, node_id)
        by_app: dict[str, dict[str, int]] = {}
        for (app_id, user_id), presences in by_user(conns).items():
            key = self._names.conns_key(app_id, user_id)
            pipe.hset(key, mapping={conn.conn_id: encode_conn(node_id, conn) for conn in presences})
            pipe.persist(key)
            by_app.setdefault(app_id, {})[user_id] = ONLINE_UNTIL_REMOVED
        for app_id, users in by_app.items():
            pipe.zadd(self._names.online_key(app_id), users, gt=True)
        if conns:
            # Additive: a connection removed meanwhile lingers here at worst, and removing
            # it again when reaping is a no-op.
            pipe.hset(self._names.node_conns_key(node_id), mapping=node_conns(conns))
        with unavailable("refreshing a node"):
            results = await pipe.execute()
        return results[0] is not None

    async def reset_node(self, node_id: str) -> list[Presence]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._names.node_conns_key(node_id))
        pipe.smembers(self._names.node_channels_key(node_id))
        with unavailable("resetting a node"):
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
        with unavailable("removing a node"):
            _, _, recorded, channels = await pipe.execute()
            users: dict[User, set[str]] = {}
            for conn_id, pair in recorded.items():
                users.setdefault(unpair(pair), set()).add(conn_id)
            for conn in conns:
                users.setdefault((conn.app_id, conn.user_id), set()).add(conn.conn_id)
            pipe = self._redis.pipeline(transaction=False)
            for (app_id, user_id), conn_ids in users.items():
                pipe.hdel(self._names.conns_key(app_id, user_id), *conn_ids)
            self._forget_node(pipe, node_id, channels)
            await pipe.execute()

    async def reap_dead_nodes(self) -> list[Presence]:
        with unavailable("reaping dead nodes"):
            registered = sorted(await self._redis.smembers(self._names.nodes_key))
            alive = await self._alive(registered)
            dead = [node for node in registered if node not in alive]
            if not dead:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for node in dead:
                pipe.set(self._names.reap_key(node), "1", nx=True, px=ttl_in_ms(REAP_CLAIM_S))
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
                users.setdefault(unpair(pair), []).append(conn_id)

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

    def _remove(self, pipe: AnyPipeline, app_id: str, user_id: str, conn_ids: Sequence[str]) -> None:
        keys = [self._names.conns_key(app_id, user_id), self._names.online_key(app_id)]
        evalsha(pipe, scripts.REMOVE_CONNECTIONS, keys, [user_id, *conn_ids])

    def _forget_node(self, pipe: AnyPipeline, node_id: str, channels: set[str]) -> None:
        """Queue the removal of a node's channel routes and its own bookkeeping."""
        for pair in channels:
            app_id, channel = unpair(pair)
            pipe.hdel(self._names.channel_nodes_key(app_id, channel), node_id)
        # Two DELs, not one: the keys carry no common hash tag (Redis Cluster).
        pipe.delete(self._names.node_conns_key(node_id))
        pipe.delete(self._names.node_channels_key(node_id))
        pipe.srem(self._names.nodes_key, node_id)


def _add_calls(users: dict[User, list[Presence]]) -> list[tuple[str, list[tuple[User, list[Presence]]]]]:
    """The users of each app in chunks of ``USERS_PER_ADD``: one script call each (a
    script's keys must share the app's hash tag)."""
    by_app: dict[str, list[tuple[User, list[Presence]]]] = {}
    for user, presences in users.items():
        by_app.setdefault(user[0], []).append((user, presences))
    return [
        (app_id, app_users[start : start + USERS_PER_ADD])
        for app_id, app_users in by_app.items()
        for start in range(0, len(app_users), USERS_PER_ADD)
    ]
