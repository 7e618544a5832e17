"""What operators see of a live cluster: `herald status`, `/metrics` and `/readyz` on every
service, and the quick-start commands `herald apps create` and `herald token`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from herald.ops.metrics import sample
from herald_client import Publisher
from tests.cluster.conftest import Cluster
from tests.support.ws import collect_messages, next_frame, open_ws

HERALD = str(Path(sys.executable).with_name("herald"))
CLI_TIMEOUT_S = 30


def _herald(cluster: Cluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HERALD, *args],
        env={**os.environ, **cluster.env, **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def _herald_async(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI without blocking the event loop: the test's sockets must keep answering the
    server's pings meanwhile (heartbeat 1 s here), or it closes them as dead (1011)."""
    process = await asyncio.create_subprocess_exec(
        HERALD, *args, env={**os.environ, **cluster.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, stdout.decode(), stderr.decode())


async def _metrics(http: httpx.AsyncClient, cluster: Cluster, service: str) -> str:
    answer = await http.get(cluster.url(service) + "/metrics")
    assert answer.status_code == 200, (service, answer.text)
    return answer.text


async def _stage_counts(http: httpx.AsyncClient, cluster: Cluster) -> dict[str, float]:
    collect, dispatch, push = [await _metrics(http, cluster, name) for name in ("collect", "dispatch", "push-b")]
    return {
        "accepted": sample(collect, "herald_messages_accepted_total", 'via="http"'),
        "dispatched": sample(dispatch, "herald_messages_dispatched_total"),
        "delivered": sample(push, "herald_messages_delivered_total"),
        "latency": sample(push, "herald_delivery_latency_seconds_count"),
        "acked": sample(push, "herald_messages_acked_total"),
    }


async def test_status_shows_each_node_with_its_connections_the_queues_and_the_apps_rate(
    cluster: Cluster, publisher: Publisher, cluster_app: dict[str, str]
) -> None:
    users = [f"status-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
    sockets = [
        await open_ws(cluster.ws_url(node), await publisher.token(user))
        for node, user in zip(("push-a", "push-a", "push-b"), users, strict=True)
    ]
    for ws in sockets:
        await next_frame(ws, "welcome")
    for n in range(20):
        await publisher.send(users, "tick", n)
    for ws in sockets:  # read, so that their clients keep answering pings
        await collect_messages(ws, 20)
    await asyncio.sleep(2.5)  # a heartbeat (1 s here) reports the nodes; dispatch writes counts each second

    shown = await _herald_async(cluster, "status")

    assert shown.returncode == 0, shown.stderr
    print(shown.stdout)  # shown with -s: what an operator sees
    lines = shown.stdout.splitlines()
    node_a = next(line for line in lines if cluster.node_id("push-a") in line)
    node_b = next(line for line in lines if cluster.node_id("push-b") in line)
    assert node_a.split()[1:3] == ["alive", "2"] and node_b.split()[1:3] == ["alive", "1"], shown.stdout
    assert "s ago" in node_a
    assert any(line.split()[:1] == ["dispatch"] for line in lines), shown.stdout
    app_line = next(line for line in lines if cluster_app["app_id"] in line)
    # 60 messages (3 users x 20) counted in whole seconds of a 10 s window: 6.0/s.
    assert app_line.split()[1:] == ["cluster-test", "3", "6.0"], shown.stdout
    for ws in sockets:
        await ws.close()


async def test_status_without_the_cluster_servers_says_which_variables_it_needs(cluster: Cluster) -> None:
    shown = _herald(cluster, "status", HERALD_REDIS_URL="", HERALD_AMQP_URL="")

    assert shown.returncode == 1
    assert "HERALD_REDIS_URL" in shown.stderr and "HERALD_AMQP_URL" in shown.stderr


async def test_every_service_serves_metrics_and_readiness(cluster: Cluster, http: httpx.AsyncClient) -> None:
    for service in ("auth", "collect", "dispatch", "push-a", "push-b"):
        assert (await http.get(cluster.url(service) + "/readyz")).status_code == 200, service
        assert "herald_" in await _metrics(http, cluster, service)


async def test_a_message_is_counted_at_every_stage_of_its_way(
    cluster: Cluster, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    user = f"counted-{uuid.uuid4().hex[:6]}"
    ws = await open_ws(cluster.ws_url("push-b"), await publisher.token(user))
    await next_frame(ws, "welcome")
    await ws.send('{"type":"resume","positions":{}}')
    before = await _stage_counts(http, cluster)
    for n in range(5):
        await publisher.send([user], "stage", n)
    frames = await collect_messages(ws, 5)
    await ws.send(f'{{"type":"ack","channel":"user:{user}","offset":{frames[-1]["offset"]}}}')
    expected = {"accepted": 5, "dispatched": 5, "delivered": 5, "latency": 5, "acked": 1}

    changes: dict[str, float] = {}
    for _ in range(100):  # the ack is counted when push reads it, a moment later
        after = await _stage_counts(http, cluster)
        changes = {stage: after[stage] - before[stage] for stage in before}
        if changes == expected:
            break
        await asyncio.sleep(0.1)
    assert changes == expected
    await ws.close()


async def test_errors_are_counted_by_service_and_code(cluster: Cluster, http: httpx.AsyncClient) -> None:
    def refused(text: str) -> float:
        return sample(text, "herald_errors_total", 'code="missing_credential",service="collect"')

    before = refused(await _metrics(http, cluster, "collect"))
    for _ in range(3):
        assert (await http.post(cluster.url("collect") + "/v1/messages", json={})).status_code == 401

    assert refused(await _metrics(http, cluster, "collect")) - before == 3


async def test_apps_create_then_token_gives_a_token_that_connects(cluster: Cluster, tmp_path: Path) -> None:
    data = {"HERALD_DATA_DIR": str(tmp_path)}
    created = _herald(cluster, "apps", "create", "quickstart", **data)
    assert created.returncode == 0, created.stderr
    app_id = created.stdout.split()[1]

    by_name = _herald(cluster, "token", "quickstart", "qs-user", "--device", "cli", **data)
    by_id = _herald(cluster, "token", app_id, "qs-user", **data)

    assert by_name.returncode == 0 and by_id.returncode == 0, by_name.stderr + by_id.stderr
    for token in (by_name.stdout.strip(), by_id.stdout.strip()):
        ws = await open_ws(cluster.ws_url("push-a"), token)
        assert (await next_frame(ws, "welcome"))["user_id"] == "qs-user"
        await ws.close()


async def test_token_for_an_app_without_a_known_key_is_refused_with_the_fix(cluster: Cluster, tmp_path: Path) -> None:
    token = _herald(cluster, "token", "nobody-knows", "u1", HERALD_DATA_DIR=str(tmp_path), HERALD_APP_KEY="")

    assert token.returncode == 1
    assert "--key" in token.stderr and "HERALD_APP_KEY" in token.stderr
