"""A push node's heartbeat: the same few directory calls for one connection or many, and a
full re-assertion of its connections only when the directory's record of them was lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.core.errors import Unavailable
from herald.services.push.node import PushNode
from tests.support.pushnode import APP, CountingStore, connect, counting_sqlite, settle

TTL_S = 30.0


class WatchedDirectory(MemoryDirectory):
    """The memory directory, counting full re-assertions and failing calls on request."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshed = 0
        self.failing: set[str] = set()

    async def refresh_node(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> bool:
        self.refreshed += 1
        return await super().refresh_node(node_id, conns, ttl_s)

    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        if "add" in self.failing:
            raise Unavailable("directory down")
        return await super().add_connections(node_id, conns, ttl_s)

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        if "remove" in self.failing:
            raise Unavailable("directory down")
        return await super().remove_connections(node_id, conns)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    async with counting_sqlite() as counting:
        yield counting


@pytest.fixture
def directory() -> WatchedDirectory:
    return WatchedDirectory()


@pytest.fixture
def node(store: CountingStore, directory: WatchedDirectory) -> PushNode:
    node = PushNode("node-a", MemoryBus(), directory, store, TTL_S / 3)  # type: ignore[arg-type]
    node.routes.routable = True
    return node


async def routed_users(directory: MemoryDirectory, *users: str) -> dict[str, set[str]]:
    found = await directory.nodes_for([(APP, user) for user in users])
    return {user: nodes for (_, user), nodes in found.items()}


async def test_a_heartbeat_re_asserts_no_connection_while_the_directory_has_them_all(
    node: PushNode, directory: WatchedDirectory
) -> None:
    for user in ("ann", "bob", "cy"):
        await connect(node, user)

    await node.routes.beat()
    await node.routes.beat()

    assert directory.refreshed == 0
    assert await routed_users(directory, "ann", "bob", "cy") == {"ann": {"node-a"}, "bob": {"node-a"}, "cy": {"node-a"}}


async def test_a_heartbeat_after_the_directory_lost_everything_restores_every_connection(
    node: PushNode, directory: WatchedDirectory, store: CountingStore
) -> None:
    await connect(node, "ann")
    await connect(node, "bob")
    await settle(node)
    directory.clear()
    reads_before = store.calls["read_channel"]

    await node.routes.beat()
    await settle(node)

    assert await routed_users(directory, "ann", "bob") == {"ann": {"node-a"}, "bob": {"node-a"}}
    assert await directory.online(APP, None, 10) == {"ann": 1, "bob": 1}
    # What was dispatched while nothing was routed here is caught up from the store.
    assert store.calls["read_channel"] > reads_before


async def test_a_heartbeat_restores_connections_removed_while_the_node_looked_dead(
    node: PushNode, directory: WatchedDirectory
) -> None:
    await connect(node, "ann")
    await directory.reset_node("node-a")  # as a reaper does when the node stalled past its TTL

    await node.routes.beat()

    assert await routed_users(directory, "ann") == {"ann": {"node-a"}}


async def test_a_connect_the_directory_missed_is_written_by_the_next_heartbeat(
    node: PushNode, directory: WatchedDirectory
) -> None:
    directory.failing.add("add")
    await connect(node, "ann")
    directory.failing.clear()

    await node.routes.beat()

    assert await routed_users(directory, "ann") == {"ann": {"node-a"}}


async def test_a_disconnect_the_directory_missed_is_retried_by_the_heartbeat(
    node: PushNode, directory: WatchedDirectory
) -> None:
    conn = await connect(node, "ann")
    directory.failing.add("remove")
    await node.detach(conn)
    assert await routed_users(directory, "ann") == {"ann": {"node-a"}}
    directory.failing.clear()

    await node.routes.beat()

    assert await routed_users(directory, "ann") == {}
    assert await directory.online(APP, None, 10) == {}


async def test_disconnects_missed_past_the_bound_make_the_node_rebuild_its_record(
    node: PushNode, directory: WatchedDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("herald.services.push.routes.MAX_OWED_REMOVALS", 1)
    staying = await connect(node, "ann")
    leaving = [await connect(node, user) for user in ("bob", "cy")]
    directory.failing.add("remove")
    for conn in leaving:
        await node.detach(conn)
    directory.failing.clear()

    await node.routes.beat()

    assert await routed_users(directory, "ann", "bob", "cy") == {"ann": {"node-a"}}
    assert staying.routed


async def test_a_starting_node_forgets_the_connections_of_its_previous_process(
    store: CountingStore, directory: WatchedDirectory
) -> None:
    await directory.add_connections("node-a", [Presence(APP, "ann", "old-conn")], TTL_S)
    node = PushNode("node-a", MemoryBus(), directory, store, TTL_S / 3)  # type: ignore[arg-type]

    await node.start()
    try:
        assert await routed_users(directory, "ann") == {}
        assert await directory.online(APP, None, 10) == {}
    finally:
        await node.stop()


async def test_heartbeat_directory_calls_do_not_grow_with_connections(
    node: PushNode, directory: WatchedDirectory
) -> None:
    calls: list[str] = []
    real: dict[str, Any] = {}
    for name in ("beat", "refresh_node", "set_channel_counts", "reap_dead_nodes", "report_node"):
        real[name] = getattr(directory, name)

        def wrap(name: str = name) -> Any:
            async def call(*args: Any, **kwargs: Any) -> Any:
                calls.append(name)
                return await real[name](*args, **kwargs)

            return call

        setattr(directory, name, wrap())
    await connect(node, "ann")
    calls.clear()
    await node.routes.beat()
    with_one = list(calls)
    for index in range(50):
        await connect(node, f"user-{index}")
    calls.clear()
    await node.routes.beat()

    assert calls == with_one == ["beat", "set_channel_counts", "reap_dead_nodes", "report_node"]


async def test_a_heartbeat_reports_the_nodes_connections_per_app(node: PushNode, directory: WatchedDirectory) -> None:
    await connect(node, "ann")
    leaving = await connect(node, "bob")
    await node.detach(leaving)

    await node.routes.beat()

    [report] = await directory.node_reports()
    assert (report.node_id, report.connections, report.by_app) == ("node-a", 1, {APP: 1})


async def test_a_lost_subscription_takes_the_node_out_of_routing_and_its_return_catches_up(
    store: CountingStore, directory: WatchedDirectory
) -> None:
    bus = MemoryBus()
    await bus.start()
    node = PushNode("node-a", bus, directory, store, TTL_S / 3)  # type: ignore[arg-type]
    await node.start()
    try:
        await connect(node, "ann")
        await settle(node)
        reads_before = store.calls["read_channel"]

        bus.lose_subscriptions()
        await asyncio.sleep(0.01)
        assert not node.routes.routable
        assert await routed_users(directory, "ann") == {}

        await asyncio.sleep(0.3)  # the memory bus subscribes again after 0.1 s
        await settle(node)
        assert node.routes.routable
        assert await routed_users(directory, "ann") == {"ann": {"node-a"}}
        # What was routed elsewhere (to no one) while it was out is read from the store.
        assert store.calls["read_channel"] > reads_before
    finally:
        await node.stop()
        await bus.close()
