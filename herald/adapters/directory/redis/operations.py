"""Rate limits and operations in the Redis directory: an app's token bucket, the nodes'
reports, per-second message counts."""

from __future__ import annotations

import time
from collections.abc import Mapping

from herald.adapters.directory import scripts
from herald.adapters.directory.base import (
    COUNTS_KEPT_S,
    NodeReport,
    RateDecision,
    average_rates,
    free_of_charge,
)
from herald.adapters.directory.redis.client import RedisClient, evalsha, ttl_in_ms, unavailable
from herald.core import codec


class RedisOperations(RedisClient):
    async def take(self, app_id: str, cost: int, rate_per_s: float, burst: int) -> RateDecision:
        if free_of_charge(cost, rate_per_s, burst):
            return RateDecision(True, 0.0)
        with unavailable("taking rate tokens"):
            [(allowed, retry_after)] = await self._execute(
                lambda pipe: evalsha(pipe, scripts.TAKE, [self._names.rate_key(app_id)], [cost, rate_per_s, burst])
            )
        return RateDecision(bool(allowed), float(retry_after))

    async def report_node(self, report: NodeReport, ttl_s: float) -> None:
        """One hash for every node's report; each carries its own deadline, and readers drop
        the stale ones, since a hash field cannot expire on its own in Redis 7.0."""
        value = {
            "connections": report.connections,
            "by_app": report.by_app,
            "queue_depth": report.queue_depth,
            "at_ms": report.at_ms,
            "until_ms": int(time.time() * 1000) + ttl_in_ms(ttl_s),
        }
        with unavailable("reporting a node"):
            await self._redis.hset(self._names.node_reports_key, report.node_id, codec.dumps_text(value))

    async def node_reports(self) -> list[NodeReport]:
        with unavailable("reading node reports"):
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
        with unavailable("counting messages"):
            await pipe.execute()

    async def message_rates(self, window_s: int, now_s: int) -> dict[str, float]:
        pipe = self._redis.pipeline(transaction=False)
        for second in range(now_s - window_s, now_s):
            pipe.hgetall(self._names.message_counts_key(second))
        with unavailable("reading message rates"):
            seconds = await pipe.execute()
        return average_rates(seconds, window_s)
