"""Herald on a Redis Cluster (three primaries, three replicas): the primary holding the app's
slot is killed in the middle of a 300 msg/s stream, its replica takes over, and routes and
presence recover with nothing lost.

While the slot has no primary (the cluster's node timeout, then the replica's election)
directory calls fail: dispatch holds its batch and tries again, push nodes re-assert what
they hold at their next heartbeat. Writes the old primary had not replicated yet are
lost with it; the heartbeat's comparison of what the directory holds with what the node
holds re-asserts them, and messages routed meanwhile are caught up from the store.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from herald_client import HeraldAPIError, Operator, Publisher
from tests.cluster.conftest import Cluster, start_cluster
from tests.ha.conftest import RATE, STREAM_S, report
from tests.support.cleanup import drop_namespace
from tests.support.redis_ha import RedisCluster
from tests.support.stalls import duplicates_reaching_the_app, longest_gap
from tests.support.traffic import produce, subscribe, users

pytestmark = pytest.mark.ha

FAULT_AT_S = 1.5
PEOPLE = 40


@pytest.mark.timeout(600)
async def test_killing_the_primary_of_the_apps_slot_loses_nothing_and_presence_recovers(
    breakable_redis_cluster: RedisCluster, amqp_url: str, redis_url: str, mongo_url: str, tmp_path: Path
) -> None:
    redis = breakable_redis_cluster
    herald = start_cluster(tmp_path, amqp_url, redis.url, mongo_url, HERALD_REDIS_MODE="cluster")
    killed = None
    try:
        async with Operator(herald.url("auth"), herald.env["HERALD_ADMIN_TOKEN"]) as operator:
            app = await operator.create_app("redis-failover")
        async with Publisher(herald.url("auth"), herald.url("collect"), app["api_key"]) as publisher:
            people = users(PEOPLE)
            audience = await subscribe(publisher, _spread(herald, people))
            killed = redis.primary_of(f"{{{app['app_id']}}}")
            faulted: list[float] = []
            watching: list[asyncio.Task[tuple[int, float]]] = []

            def kill_the_primary() -> None:
                faulted.append(time.monotonic())
                assert killed is not None
                killed.kill()
                # Presence is watched from the kill on, while the traffic goes on.
                watching.append(asyncio.create_task(_everyone_online(publisher, faulted[0], PEOPLE)))

            started = time.monotonic()
            try:
                tally = await produce(publisher, people, rate=RATE, seconds=STREAM_S, at={FAULT_AT_S: kill_the_primary})
                await audience.wait_for(tally, 60)
                summary = audience.report(tally)
                missing = sum(len(offsets) for offsets in audience.missing(tally).values())
                duplicates = duplicates_reaching_the_app(audience)
                stall = longest_gap(audience, faulted[0])
                usual = longest_gap(audience, started + 0.5, faulted[0])
                online, presence_after = await watching[0]
                successor = redis.primary_of(f"{{{app['app_id']}}}")
                line = (
                    f"Redis Cluster, kill -9 of the primary of the app's slot (port {killed.port}) during {RATE} "
                    f"msg/s: {summary} lost={missing} duplicates_reaching_app={duplicates}; stall {stall:.2f} s "
                    f"(longest gap before the fault {usual:.2f} s); replica on port {successor.port} took over; "
                    f"all {online} users online again {presence_after:.2f} s after the kill"
                )
                report(line)
                assert missing == 0, f"{line}\n{herald.logs()}"
                assert duplicates == 0, line
                assert successor is not killed, line
                assert online == PEOPLE, f"{line}\n{herald.logs()}"
            finally:
                await audience.close()
    finally:
        codes = herald.stop_all()
        await drop_namespace(herald.namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url)
        if killed is not None and not killed.running:
            # Back as a replica of the node that took over, for the next test of this module.
            killed.start()
            await asyncio.to_thread(redis.wait_ok)
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"


async def _everyone_online(publisher: Publisher, since: float, expected: int) -> tuple[int, float]:
    """How many users the directory says are online once it says all (or after 30 s), and
    how long after ``since`` that was."""
    await asyncio.sleep(0.5)  # past the kill: the directory still answers from the old primary for a moment
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:
        try:
            count = int((await publisher.online())["total_users"])
        except (HeraldAPIError, httpx.HTTPError):  # the directory may still be failing over: ask again
            count = 0
        if count == expected:
            break
        await asyncio.sleep(0.2)
    return count, time.monotonic() - since


def _spread(cluster: Cluster, people: list[str]) -> dict[str, list[str]]:
    a, b = cluster.ws_url("push-a"), cluster.ws_url("push-b")
    return {user: ([a, b] if index % 2 == 0 else [b, a]) for index, user in enumerate(people)}
