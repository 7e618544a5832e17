"""Routing in the Redis directory: which live nodes hold a user's connections or read a
channel, and each node's reader counts of channels (groups and broadcast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herald.adapters.directory.base import ChannelKey
from herald.adapters.directory.redis.client import SCREEN_FROM, RedisClient, ttl_in_ms, unavailable
from herald.adapters.directory.redis.layout import decode_conn, pair


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
