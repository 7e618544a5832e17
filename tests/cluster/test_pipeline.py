"""The core pipeline across processes: collect -> RabbitMQ -> dispatch -> the right push node."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from herald.ops.metrics import sample
from herald_client import Publisher
from tests.cluster.conftest import Cluster
from tests.support.ws import collect_messages, next_frame, no_message_within, open_ws


def _user(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def _counter(http: httpx.AsyncClient, cluster: Cluster, node: str, name: str) -> float:
    return sample((await http.get(cluster.url(node) + "/metrics")).text, name)


async def test_users_on_different_nodes_each_receive_exactly_their_own_messages(
    cluster: Cluster, publisher: Publisher
) -> None:
    alice, bob = _user("alice"), _user("bob")
    ws_a = await open_ws(cluster.ws_url("push-a"), await publisher.token(alice))
    ws_b = await open_ws(cluster.ws_url("push-b"), await publisher.token(bob))
    await next_frame(ws_a, "welcome")
    await next_frame(ws_b, "welcome")
    sent = {alice: [], bob: []}
    for n in range(40):
        user = alice if n % 3 else bob
        [accepted] = await publisher.send([user], "n", n)
        sent[user].append((accepted["offset"], n))
    got_a = await collect_messages(ws_a, len(sent[alice]))
    got_b = await collect_messages(ws_b, len(sent[bob]))
    assert [(f["offset"], f["data"]) for f in got_a] == sent[alice], f"alice sent {len(sent[alice])} got {len(got_a)}"
    assert [(f["offset"], f["data"]) for f in got_b] == sent[bob], f"bob sent {len(sent[bob])} got {len(got_b)}"
    assert await no_message_within(ws_a, 0.3) and await no_message_within(ws_b, 0.01)
    await ws_a.close()
    await ws_b.close()


async def test_a_nodes_queue_receives_only_messages_for_its_own_users(
    cluster: Cluster, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    carol = _user("carol")
    ws = await open_ws(cluster.ws_url("push-a"), await publisher.token(carol))
    await next_frame(ws, "welcome")
    before_a = await _counter(http, cluster, "push-a", "herald_push_bus_messages_total")
    before_b = await _counter(http, cluster, "push-b", "herald_push_bus_messages_total")
    for n in range(25):
        await publisher.send([carol], "mine", n)
    assert len(await collect_messages(ws, 25)) == 25
    after_a = await _counter(http, cluster, "push-a", "herald_push_bus_messages_total")
    after_b = await _counter(http, cluster, "push-b", "herald_push_bus_messages_total")
    assert (after_a - before_a, after_b - before_b) == (25, 0)
    await ws.close()


async def test_a_user_on_both_nodes_receives_on_every_connection(cluster: Cluster, publisher: Publisher) -> None:
    dave = _user("dave")
    phone = await open_ws(cluster.ws_url("push-a"), await publisher.token(dave))
    laptop = await open_ws(cluster.ws_url("push-b"), await publisher.token(dave))
    await next_frame(phone, "welcome")
    await next_frame(laptop, "welcome")
    [accepted] = await publisher.send([dave], "both", {"x": 1})
    for ws in (phone, laptop):
        frame = await next_frame(ws, "message")
        assert (frame["id"], frame["offset"]) == (accepted["id"], accepted["offset"])
        await ws.close()


async def test_one_message_to_many_users_reaches_each_on_their_node(cluster: Cluster, publisher: Publisher) -> None:
    users = [_user(f"m{i}") for i in range(6)]
    sockets = []
    for index, user in enumerate(users):
        ws = await open_ws(cluster.ws_url("push-a" if index % 2 else "push-b"), await publisher.token(user))
        await next_frame(ws, "welcome")
        sockets.append(ws)
    accepted = await publisher.send(users, "all", "hi")
    assert sorted(a["channel"] for a in accepted) == sorted(f"user:{u}" for u in users)
    for user, ws in zip(users, sockets, strict=True):
        frame = await next_frame(ws, "message")
        assert frame["channel"] == f"user:{user}" and frame["data"] == "hi"
        await ws.close()


async def test_a_message_becomes_dispatched_in_the_store(cluster: Cluster, publisher: Publisher) -> None:
    [accepted] = await publisher.send([_user("erin")], "status")
    status = ""
    for _ in range(100):
        status = (await publisher.message(accepted["id"]))["status"]
        if status == "dispatched":
            break
    assert status == "dispatched"


async def test_every_service_is_healthy_and_ready(cluster: Cluster, http: httpx.AsyncClient) -> None:
    for name in ("auth", "collect", "dispatch", "push-a", "push-b"):
        assert (await http.get(cluster.url(name) + "/healthz")).status_code == 200, name
        ready = await http.get(cluster.url(name) + "/readyz")
        assert ready.status_code == 200, f"{name}: {ready.text}"


async def test_receipts_cross_processes_delivered_then_acked(cluster: Cluster, publisher: Publisher) -> None:
    user = _user("fred")
    ws = await open_ws(cluster.ws_url("push-b"), await publisher.token(user), device="tablet")
    await next_frame(ws, "welcome")
    [accepted] = await publisher.send([user], "receipted")
    assert accepted["online"] is True
    frame = await next_frame(ws, "message")
    await ws.send(f'{{"type":"ack","channel":"{frame["channel"]}","offset":{frame["offset"]}}}')
    message: dict = {}
    for _ in range(60):
        message = await publisher.message(accepted["id"])
        if message["status"] == "acked":
            break
        await asyncio.sleep(0.1)
    assert message["status"] == "acked", message
    [device] = message["deliveries"]
    assert device["device"] == "tablet" and device["acked_at"] >= device["delivered_at"]
    await ws.close()
