"""A push node's /ops/snapshot: operators only, one gather however many pages ask."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import NodeReport
from herald.adapters.directory.memory import MemoryDirectory
from herald.services.push.ops_page import FRESH_S, OpsSnapshots

TOKEN = "operator-token-of-this-cluster-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def directory() -> AsyncIterator[MemoryDirectory]:
    directory = MemoryDirectory()
    await directory.start()
    yield directory
    await directory.close()


def _snapshots(directory: MemoryDirectory, token: str = TOKEN, clock: Clock | None = None) -> OpsSnapshots:
    registry = CollectorRegistry()
    Counter("herald_messages_delivered", "", registry=registry).inc(3)
    return OpsSnapshots("push-a", directory, MemoryBus(), None, token, registry, clock or Clock())


async def test_no_token_is_asked_for(directory: MemoryDirectory) -> None:
    status, body = await _snapshots(directory).answer("/ops/snapshot", None)

    assert (status, body["error"]["code"]) == (401, "missing_credential")


async def test_a_wrong_token_is_refused(directory: MemoryDirectory) -> None:
    status, body = await _snapshots(directory).answer("/ops/snapshot", "Bearer not-the-operator")

    assert (status, body["error"]["code"]) == (401, "invalid_credential")


async def test_a_node_without_an_operator_token_serves_no_snapshot(directory: MemoryDirectory) -> None:
    status, body = await _snapshots(directory, token="").answer("/ops/snapshot", "Bearer ")

    assert (status, body["error"]["code"]) == (403, "ops_disabled")


async def test_other_paths_under_ops_are_not_found(directory: MemoryDirectory) -> None:
    status, _ = await _snapshots(directory).answer("/ops/secrets", f"Bearer {TOKEN}")

    assert status == 404


async def test_the_operator_gets_the_nodes_queues_and_this_process(directory: MemoryDirectory) -> None:
    await directory.report_node(NodeReport("push-a", 2, {"app_1": 2}, 0, 1), ttl_s=30)

    status, body = await _snapshots(directory).answer("/ops/snapshot", f"Bearer {TOKEN}")

    assert status == 200
    assert [(n["node_id"], n["connections"]) for n in body["nodes"]] == [("push-a", 2)]
    assert body["queues"] == {"dispatch": 0, "receipts": 0, "retries": 0, "dead": 0}
    assert body["process"]["counters"] == {"herald_messages_delivered": {"": 3.0}}
    assert body["node_id"] == "push-a"


async def test_pages_asking_together_share_one_gather(directory: MemoryDirectory) -> None:
    clock = Clock()
    snapshots = _snapshots(directory, clock=clock)
    first = await snapshots.snapshot()

    clock.now += FRESH_S / 2
    assert await snapshots.snapshot() is first
    clock.now += FRESH_S
    assert await snapshots.snapshot() is not first
