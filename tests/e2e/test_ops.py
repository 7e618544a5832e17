"""The operator's view of `herald dev`: its /ops/snapshot, and `herald status` with no server URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from herald_client import Publisher
from tests.support.procs import Standalone
from tests.support.servers import free_port
from tests.support.traffic import produce, subscribe, users


async def _snapshot(http: httpx.AsyncClient, standalone: Standalone) -> dict[str, Any]:
    response = await http.get(
        f"{standalone.push_http_url}/ops/snapshot", headers={"Authorization": f"Bearer {standalone.admin_token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _status(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`herald status` as an operator types it: no HERALD_* variable but the data directory."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    return subprocess.run(
        [sys.executable, "-m", "herald.services.cli", "status", *args],
        env={**env, "HERALD_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_the_snapshot_is_for_the_operator_only(standalone: Standalone, http: httpx.AsyncClient) -> None:
    url = f"{standalone.push_http_url}/ops/snapshot"

    anonymous = await http.get(url)
    wrong = await http.get(url, headers={"Authorization": "Bearer " + standalone.demo["api_key"]})

    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "missing_credential")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_credential")


async def test_the_snapshot_shows_the_node_its_connections_and_the_messages_going_through(
    standalone: Standalone, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    names = users(3, "ops")
    audience = await subscribe(publisher, {user: [standalone.ws_url] for user in names})
    try:
        before = await _snapshot(http, standalone)
        tally = await produce(publisher, names, rate=100, seconds=1.5)
        await audience.wait_for(tally, timeout_s=15)
        assert not audience.missing(tally), audience.report(tally)
        # Node reports come with each heartbeat (1 s here), per-app counts once a second.
        deadline = time.monotonic() + 10
        while True:
            after = await _snapshot(http, standalone)
            rates = {app["app_id"]: app["messages_per_s"] for app in after["apps"]}
            seen = after["connections"] >= len(names) and rates.get(standalone.demo["app_id"], 0) > 0
            if seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await audience.close()

    [node] = after["nodes"]
    assert (node["node_id"], node["alive"]) == (f"127.0.0.1:{standalone.port_base + 4}", True)
    assert after["connections"] >= len(names)
    assert {"dispatch", "receipts", f"node:{node['node_id']}"} <= set(after["queues"])
    delivered = after["process"]["counters"]["herald_messages_delivered"][""]
    delivered_before = before["process"]["counters"]["herald_messages_delivered"][""]
    assert delivered - delivered_before >= tally.accepted_count
    assert after["process"]["per_s"]["delivered"] > 0
    assert after["process"]["latency_ms"]["p50"] is not None
    demo = next(app for app in after["apps"] if app["app_id"] == standalone.demo["app_id"])
    assert demo["name"] == "demo" and demo["messages_per_s"] > 0


def test_herald_status_reads_herald_dev_without_server_urls(standalone: Standalone) -> None:
    run = _status(standalone.data_dir)

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Nodes: 1 alive"), run.stdout
    node = f"127.0.0.1:{standalone.port_base + 4}"
    assert any(line.split()[:2] == [node, "alive"] for line in lines), run.stdout
    assert f"Process answering ({node})" in lines, run.stdout


def test_herald_status_says_where_it_looked_when_nothing_answers(standalone: Standalone) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"

    run = _status(standalone.data_dir, "--url", nowhere)

    assert run.returncode == 1
    assert run.stderr.startswith(f"herald: no push node answers at {nowhere}"), run.stderr
