"""Nothing acknowledged is lost when parts of the cluster fail. Each test breaks a fresh
cluster on purpose and reports sent/accepted/received/duplicates in its assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from herald.core.names import Names
from herald.ops.metrics import sample
from herald_client import HeraldAPIError, Publisher
from tests.cluster.conftest import Cluster, create_app, finish_cluster, start_cluster
from tests.support import rabbit_cluster
from tests.support.rabbit_cluster import RabbitCluster, RabbitNode
from tests.support.traffic import Tally, produce, subscribe, users
from tests.support.waiting import eventually
from tests.support.ws import collect_messages, next_frame, open_ws


def _spread(cluster: Cluster, people: list[str]) -> dict[str, list[str]]:
    """Half the users live on push-a, half on push-b; each reconnects to the other."""
    a, b = cluster.ws_url("push-a"), cluster.ws_url("push-b")
    return {user: ([a, b] if index % 2 == 0 else [b, a]) for index, user in enumerate(people)}


async def test_killing_a_push_node_loses_nothing(own_cluster: Cluster, own_publisher: Publisher) -> None:
    people = users(200)
    audience = await subscribe(own_publisher, _spread(own_cluster, people))
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        own_cluster.kill("push-a")

    try:
        tally = await produce(own_publisher, people, rate=500, seconds=6, at={2.0: kill})
        await audience.wait_for(tally, 30)
        report = audience.report(tally)
        on_a = [user for index, user in enumerate(people) if index % 2 == 0]
        resumed = [
            min(t for _, t in audience.received[user] if t > killed_at[0]) - killed_at[0]
            for user in on_a
            if any(t > killed_at[0] for _, t in audience.received[user])
        ]
        print(
            f"\nkill -9 push-a: {report}; reconnect+resume after kill: "
            f"median {sorted(resumed)[len(resumed) // 2]:.2f}s max {max(resumed):.2f}s over {len(resumed)} users"
        )
        assert not audience.missing(tally), report
        # Traffic went on across the kill (however fast this machine sends it): every user
        # of the killed node got messages afterwards, from the other node.
        assert killed_at and len(resumed) == len(on_a), report
        assert audience.out_of_order() == 0, report
    finally:
        await audience.close()


async def test_a_draining_node_closes_with_1012_and_its_clients_lose_nothing(
    own_cluster: Cluster, own_publisher: Publisher
) -> None:
    people = users(40)
    audience = await subscribe(own_publisher, _spread(own_cluster, people))
    codes: list[int | None] = []

    async def drain() -> None:
        codes.append(await asyncio.to_thread(own_cluster.terminate, "push-a"))

    try:
        tally = await produce(own_publisher, people, rate=200, seconds=5, at={1.5: drain})
        await audience.wait_for(tally, 30)
        report = audience.report(tally)
        closes = [code for s in audience.subscribers.values() for code in s.closes]
        assert codes == [0], f"push-a exit code on SIGTERM: {codes}"
        assert closes.count(1012) == len(people) // 2, f"close codes seen: {closes}"
        assert not audience.missing(tally), report
    finally:
        await audience.close()


async def test_a_node_whose_consumer_was_cancelled_recovers_and_loses_nothing(
    own_cluster: Cluster, own_publisher: Publisher, amqp_url: str
) -> None:
    people = users(40)
    audience = await subscribe(own_publisher, _spread(own_cluster, people))
    queue = Names(own_cluster.namespace).node_queue(own_cluster.node_id("push-a"))

    async def cancel_consumer() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)

    try:
        tally = await produce(own_publisher, people, rate=200, seconds=5, at={1.5: cancel_consumer})
        await audience.wait_for(tally, 30)
        report = audience.report(tally)
        assert not audience.missing(tally), f"{report}\n{own_cluster.logs()}"
        assert audience.reconnects == 0, f"the node recovers in place, its clients stay connected: {report}"
        log = own_cluster.processes["push-a"].log_tail(200)
        assert "node queue consumer restored" in log, log
    finally:
        await audience.close()


@pytest.fixture
def own_broker() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own (the Debian package, other ports): the test
    restarts it, and the machine's broker, which other runs may be using, is never touched."""
    missing = rabbit_cluster.available()
    if missing:
        pytest.skip(missing)
    broker = RabbitCluster(size=1)
    try:
        broker.start()
        yield broker.nodes[0]
    finally:
        broker.stop()


@pytest.fixture
def broker_cluster(tmp_path: Path, own_broker: RabbitNode, redis_url: str, mongo_url: str) -> Iterator[Cluster]:
    herald = start_cluster(tmp_path, own_broker.url, redis_url, mongo_url)
    try:
        yield herald
    finally:
        finish_cluster(herald, own_broker.url, redis_url, mongo_url)


async def test_a_rabbitmq_restart_mid_stream_loses_nothing(broker_cluster: Cluster, own_broker: RabbitNode) -> None:
    app = await asyncio.to_thread(create_app, broker_cluster)
    async with Publisher(broker_cluster.url("auth"), broker_cluster.url("collect"), app["api_key"]) as own_publisher:
        people = users(40)
        audience = await subscribe(own_publisher, _spread(broker_cluster, people))

        async def restart() -> None:
            await asyncio.to_thread(own_broker.ctl, "stop_app")
            await asyncio.sleep(1)
            await asyncio.to_thread(own_broker.ctl, "start_app")

        try:
            tally = await produce(own_publisher, people, rate=100, seconds=8, at={1.0: restart})
            await audience.wait_for(tally, 60)
            report = audience.report(tally)
            assert not audience.missing(tally), f"{report}\n{broker_cluster.logs()}"
            assert tally.refused == 0, f"collect must accept while the broker is down: {report}"
        finally:
            await audience.close()


async def test_losing_every_redis_key_mid_stream_heals_within_a_heartbeat(
    own_cluster: Cluster, own_publisher: Publisher, redis_url: str
) -> None:
    people = users(40)
    audience = await subscribe(own_publisher, _spread(own_cluster, people))
    names = Names(own_cluster.namespace)
    redis = aioredis.from_url(redis_url)
    healed_after: list[float] = []

    async def flush() -> None:
        keys = [key async for key in redis.scan_iter(match=names.key_pattern)]
        await redis.delete(*keys)
        flushed = time.monotonic()
        while not await redis.exists(names.node_key(own_cluster.node_id("push-a"))):
            await asyncio.sleep(0.05)
        healed_after.append(time.monotonic() - flushed)

    try:
        tally = await produce(own_publisher, people, rate=200, seconds=5, at={1.5: flush})
        await audience.wait_for(tally, 30)
        report = audience.report(tally)
        heartbeat = float(own_cluster.env["HERALD_HEARTBEAT_S"])
        assert healed_after and healed_after[0] <= heartbeat * 1.5, f"presence back after {healed_after}s"
        assert not audience.missing(tally), report
    finally:
        await audience.close()
        await redis.aclose()


async def test_mongodb_down_means_503_nothing_half_accepted_and_live_connections_stay_up(
    own_cluster: Cluster, own_publisher: Publisher
) -> None:
    user = users(1)[0]
    ws = await open_ws(own_cluster.ws_url("push-a"), await own_publisher.token(user))
    await next_frame(ws, "welcome")
    [before] = await own_publisher.send([user], "before")
    assert (await next_frame(ws, "message"))["offset"] == before["offset"]
    assert own_cluster.mongo is not None
    own_cluster.mongo.stop()
    refused = 0
    try:
        for _ in range(3):
            with pytest.raises(HeraldAPIError) as info:
                await own_publisher.send([user], "during")
            assert info.value.status == 503, info.value
            refused += 1
        await ws.send('{"type":"ping"}')
        assert await next_frame(ws, "pong") == {"type": "pong"}
    finally:
        own_cluster.mongo.start()
    [after] = await own_publisher.send([user], "after")
    got = await collect_messages(ws, 1)
    assert [f["event"] for f in got] == ["after"], f"refused={refused} received={got}"
    history = await own_publisher.history(f"user:{user}")
    assert [m["event"] for m in history["messages"]] == ["before", "after"], f"refused={refused}"
    assert after["offset"] > before["offset"]
    await ws.close()


# Heartbeat 5 s: the keepalive closes a socket silent for two heartbeats, and the slow client
# answers no ping. With the other tests' 1 s, a loaded machine (the suite on two workers)
# could take longer than 2 s to push the flood past the socket buffers, and the keepalive
# closed the client before the send queue's bound did.
@pytest.mark.cluster_env(HERALD_HEARTBEAT_S="5")
async def test_a_client_that_never_reads_is_closed_with_4008_and_others_are_unaffected(
    own_cluster: Cluster, own_publisher: Publisher, http: httpx.AsyncClient
) -> None:
    slow_user, fine_user = users(2)
    slow = await open_ws(own_cluster.ws_url("push-a"), await own_publisher.token(slow_user), max_queue=1)
    await next_frame(slow, "welcome")
    audience = await subscribe(own_publisher, {fine_user: [own_cluster.ws_url("push-a")]})
    big = "x" * 60_000

    async def closes_4008() -> float:
        metrics = (await http.get(own_cluster.url("push-a") + "/metrics")).text
        return sample(metrics, "herald_push_closes_total", 'code="4008"')

    async def read_until_closed() -> int | None:
        try:
            async with asyncio.timeout(20):
                while True:
                    await slow.recv()
        except Exception:
            pass
        return slow.close_code

    producing: asyncio.Task[Tally] | None = None
    draining: asyncio.Task[int | None] | None = None
    try:
        # Loopback's socket buffers swallow a few MB; flood past them before the slow
        # client's missed pings (it reads nothing) could close it first.
        for _ in range(30):
            await own_publisher.send_batch([{"to": {"users": [slow_user]}, "event": "big", "data": big}] * 10)
        producing = asyncio.create_task(produce(own_publisher, [fine_user], rate=100, seconds=3))
        # The node gives the close frame 10 s to get past the megabytes the client has not
        # read, then cuts the connection (1006 at the client). A loaded machine needs much of
        # that to read them, so the client starts reading as soon as the node has closed it,
        # while the fine user's traffic flows.
        await eventually(closes_4008, what="the node's 4008 close of the slow client", interval_s=0.1)
        draining = asyncio.create_task(read_until_closed())
        tally = await producing
        await audience.wait_for(tally, 20)
        assert not audience.missing(tally), audience.report(tally)
        assert await closes_4008() == 1
        code = await draining
        assert code == 4008, f"slow client closed with {code}; fine user: {audience.report(tally)}"
    finally:
        for task in (producing, draining):
            if task is not None:
                task.cancel()
        await audience.close()


async def test_a_killed_nodes_connections_leave_presence_and_its_users_go_offline(
    own_cluster: Cluster, own_publisher: Publisher
) -> None:
    """Heartbeat 1 s, so routes live 3 s: the dead node's entries must be gone within a
    heartbeat of that, and another node must announce its users offline."""
    group = "room"
    await own_publisher.join(group, "ann")
    await own_publisher.join(group, "bob")
    ann = await open_ws(own_cluster.ws_url("push-b"), await own_publisher.token("ann"))
    bob = await open_ws(own_cluster.ws_url("push-a"), await own_publisher.token("bob"))
    await next_frame(ann, "welcome")
    await next_frame(bob, "welcome")
    assert (await own_publisher.presence("ann"))["online"] is True
    own_cluster.kill("push-b")
    killed = time.monotonic()
    gone_after = None
    while time.monotonic() - killed < 10:
        if not (await own_publisher.presence("ann"))["online"]:
            gone_after = time.monotonic() - killed
            break
        await asyncio.sleep(0.1)
    assert gone_after is not None and gone_after <= 4.0, f"presence still listed ann {gone_after} s after the kill"
    print(f"presence forgot the killed node's connection {gone_after:.2f} s after the kill (routes live 3 s)")
    online = await own_publisher.online(group=group)
    assert online["users"] == [{"user_id": "bob", "connections": 1}], online
    accepted = await own_publisher.send_to_group(group, "after.kill")
    assert (await next_frame(bob, "message"))["offset"] == accepted["offset"]
    await bob.close()
