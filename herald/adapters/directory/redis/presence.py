"""Presence queries in the Redis directory: a user's live connections, who is online."""

from __future__ import annotations

import time
from collections.abc import Sequence

from herald.adapters.directory.base import Located
from herald.adapters.directory.redis.client import RedisClient, unavailable
from herald.adapters.directory.redis.layout import decode_conn

# Users from which a count asks the app's online set first (``_in_online_sets``). Lower
# than routing's ``SCREEN_FROM``: routing's recipients are mostly online, while the users
# of a connect storm (the per-user connection cap reads their counts each turn) are mostly
# not, and one ZMSCORE then replaces a HGETALL per user.
COUNTS_SCREEN_FROM = 2


class RedisPresence(RedisClient):
    async def connections_of(self, app_id: str, user_id: str) -> list[Located]:
        with unavailable("listing a user's connections"):
            route = await self._redis.hgetall(self._names.conns_key(app_id, user_id))
            decoded = {conn_id: decode_conn(value) for conn_id, value in route.items()}
            alive = await self._alive(sorted({node for node, _, _ in decoded.values()}))
        located = [
            Located(conn_id, node, device, since) for conn_id, (node, since, device) in decoded.items() if node in alive
        ]
        return sorted(located, key=lambda conn: (conn.since, conn.conn_id))

    async def online(self, app_id: str, user_ids: Sequence[str] | None, limit: int) -> dict[str, int]:
        with unavailable("counting online users"):
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
        if len(user_ids) >= COUNTS_SCREEN_FROM:
            user_ids = [user_id for _, user_id in await self._in_online_sets([(app_id, u) for u in user_ids])]
        if not user_ids:
            return {}
        routes = await self._hgetall_each([self._names.conns_key(app_id, user_id) for user_id in user_ids])
        nodes = [[decode_conn(value)[0] for value in route.values()] for route in routes]
        alive = await self._alive(sorted({node for user_nodes in nodes for node in user_nodes}))
        counts = {
            user_id: sum(node in alive for node in user_nodes)
            for user_id, user_nodes in zip(user_ids, nodes, strict=True)
        }
        return {user_id: count for user_id, count in counts.items() if count}
