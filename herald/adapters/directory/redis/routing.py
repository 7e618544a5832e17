"""Routing in the Redis directory: which live nodes hold a user's connections or read a
channel, and each node's reader counts of channels (groups and broadcast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herald.adapters.directory.base import ChannelKey
from herald.adapters.directory.redis.client import RedisClient, ttl_in_ms, unavailable
from herald.adapters.directory.redis.layout import decode_conn, pair

# Recipients from which a lookup asks the apps' online sets first (one ZMSCORE per app)
# and reads the connection hashes of only those in them: a 1,000-user batch's HGETALL per
# recipient, mostly of users with no connection, was a sixth of collect's CPU per batch.
# Below it the extra round trip costs more than it saves.
SCREEN_FROM = 16


class RedisRouting(RedisClient):
    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        # Fields of dead nodes are skipped, not deleted: the reaper removes them, and only
        # it may, since it reports the users that this leaves without connections.
        unique = list(dict.fromkeys(recipients))
        if not unique:
            return {}
        with unavailable("looking up routes"):
            if len(unique) >= SCREEN_FROM:
                unique = await self._in_online_sets(unique)
            routes = await self._hgetall_each([self._names.conns_key(app_id, user_id) for app_id, user_id in unique])
            by_user = [{decode_conn(value)[0] for value in route.values()} for route in routes]
            alive = await self._alive_for_routing(set().union(*by_user))
        result: dict[tuple[str, str], set[str]] = {}
        for recipient, nodes in zip(unique, by_user, strict=True):
            live = nodes & alive
            if live:
                result[recipient] = live
        return result

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

    async def live_nodes(self) -> list[str]:
        with unavailable("listing nodes"):
            registered = sorted(await self._redis.smembers(self._names.nodes_key))
            alive = await self._alive(registered)
        return [node for node in registered if node in alive]

    async def set_channel_counts(self, node_id: str, counts: Mapping[ChannelKey, int], ttl_s: float) -> None:
        if not counts:
            return
        ttl_ms = ttl_in_ms(ttl_s)
        pipe = self._redis.pipeline(transaction=False)
        reading: list[str] = []
        stopped: list[str] = []
        for (app_id, channel), count in counts.items():
            key = self._names.channel_nodes_key(app_id, channel)
            if count > 0:
                pipe.hset(key, node_id, count)
                reading.append(pair(app_id, channel))
            else:
                pipe.hdel(key, node_id)
                stopped.append(pair(app_id, channel))
            pipe.pexpire(key, ttl_ms)
        channels_key = self._names.node_channels_key(node_id)
        if reading:
            pipe.sadd(channels_key, *reading)
        if stopped:
            pipe.srem(channels_key, *stopped)
        with unavailable("writing channel counts"):
            await pipe.execute()

    async def nodes_for_channels(self, channels: Sequence[ChannelKey]) -> dict[ChannelKey, set[str]]:
        unique = list(dict.fromkeys(channels))
        if not unique:
            return {}
        with unavailable("looking up channel routes"):
            routes = await self._hgetall_each([self._names.channel_nodes_key(app, channel) for app, channel in unique])
            readers = [{node for node, count in route.items() if int(count) > 0} for route in routes]
            alive = await self._alive_for_routing(set().union(*readers))
        result: dict[ChannelKey, set[str]] = {}
        for channel, nodes in zip(unique, readers, strict=True):
            live = nodes & alive
            if live:
                result[channel] = live
        return result
