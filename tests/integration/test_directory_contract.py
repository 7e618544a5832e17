"""The directory's specification, run against Redis and the in-process implementation alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from herald.directory.base import Directory, Presence
from herald.directory.memory import MemoryDirectory
from herald.directory.redis import RedisDirectory
from herald.errors import Unavailable
from herald.names import Names
from tests.support.servers import free_port

APP = "app-1"
TTL_S = 30.0
SHORT_TTL_S = 0.3
WAIT_S = 10.0


@dataclass
class Subject:
    directory: Directory
    lose_everything: Callable[[], Awaitable[None]]


async def _delete_namespace_keys(redis_url: str, names: Names) -> None:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=names.key_pattern, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def subject(request: pytest.FixtureRequest, namespace: str, redis_url: str) -> AsyncIterator[Subject]:
    names = Names(namespace)
    directory: Directory
    if request.param == "memory":
        memory = directory = MemoryDirectory()

        async def lose_everything() -> None:
            memory.clear()

    else:
        directory = RedisDirectory(redis_url, names)

        async def lose_everything() -> None:
            await _delete_namespace_keys(redis_url, names)

    await directory.start()
    try:
        yield Subject(directory, lose_everything)
    finally:
        await directory.close()


@pytest.fixture
def directory(subject: Subject) -> Directory:
    return subject.directory


def conn(user_id: str, conn_id: str, app_id: str = APP) -> Presence:
    return Presence(app_id=app_id, user_id=user_id, conn_id=conn_id)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    # Polling, not events: what we wait for is time passing (a TTL running out).
    async def poll() -> None:
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)


async def test_a_connected_user_is_routed_to_its_node(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}


async def test_a_user_on_two_nodes_is_routed_to_both(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a", "node-b"}}


async def test_a_user_with_two_connections_on_one_node_is_routed_there_once(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u1", "c2")], TTL_S)

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}


async def test_a_removed_connection_is_no_longer_routed(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    await directory.remove_connections("node-a", [conn("u1", "c1")])

    assert await directory.nodes_for([(APP, "u1")]) == {}


async def test_removing_one_connection_keeps_the_users_other_routes(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)

    await directory.remove_connections("node-a", [conn("u1", "c1")])

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-b"}}


async def test_a_node_whose_heartbeat_expired_is_not_routed(directory: Directory) -> None:
    # The user stays known through node-b, so only node-a's heartbeat can exclude it.
    await directory.refresh_node("node-b", [conn("u1", "c2")], TTL_S)
    await directory.refresh_node("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await directory.refresh_node("node-b", [conn("u1", "c2")], TTL_S)

    async def only_node_b() -> bool:
        return await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-b"}}

    await eventually(only_node_b)


async def test_a_heartbeat_keeps_connections_past_their_first_ttl(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S)

    await asyncio.sleep(SHORT_TTL_S * 2)

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}


async def test_refresh_restores_connections_after_the_data_is_lost(subject: Subject) -> None:
    directory = subject.directory
    conns = [conn("u1", "c1"), conn("u2", "c2")]
    await directory.add_connections("node-a", conns, TTL_S)
    await subject.lose_everything()
    assert await directory.nodes_for([(APP, "u1"), (APP, "u2")]) == {}
    assert await directory.live_nodes() == []

    assert await directory.refresh_node("node-a", conns, TTL_S) is False

    assert await directory.nodes_for([(APP, "u1"), (APP, "u2")]) == {
        (APP, "u1"): {"node-a"},
        (APP, "u2"): {"node-a"},
    }
    assert await directory.live_nodes() == ["node-a"]


async def test_a_heartbeat_says_whether_the_node_was_still_known_alive(directory: Directory) -> None:
    assert await directory.refresh_node("node-a", [], TTL_S) is False
    assert await directory.refresh_node("node-a", [], TTL_S) is True
    await directory.remove_node("node-a", [])
    assert await directory.refresh_node("node-a", [], TTL_S) is False


async def test_removed_node_is_not_routed(directory: Directory) -> None:
    conns = [conn("u1", "c1")]
    await directory.refresh_node("node-a", conns, TTL_S)

    await directory.remove_node("node-a", conns)

    assert await directory.nodes_for([(APP, "u1")]) == {}
    assert await directory.live_nodes() == []


async def test_removed_node_is_not_routed_even_for_connections_it_forgot_to_list(
    directory: Directory,
) -> None:
    await directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S)

    await directory.remove_node("node-a", [])

    assert await directory.nodes_for([(APP, "u1")]) == {}


async def test_users_of_another_app_are_not_confused(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1", app_id="app-1")], TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2", app_id="app-2")], TTL_S)

    assert await directory.nodes_for([("app-1", "u1"), ("app-2", "u1"), ("app-3", "u1")]) == {
        ("app-1", "u1"): {"node-a"},
        ("app-2", "u1"): {"node-b"},
    }


async def test_unknown_users_are_absent(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.nodes_for([(APP, "nobody"), (APP, "u1")]) == {(APP, "u1"): {"node-a"}}
    assert await directory.nodes_for([]) == {}


async def test_many_recipients_are_resolved_in_one_call(directory: Directory) -> None:
    nodes = ["node-a", "node-b", "node-c"]
    for index, node in enumerate(nodes):
        users = range(index, 300, len(nodes))
        await directory.refresh_node(node, [conn(f"u{user}", f"c{user}") for user in users], TTL_S)

    found = await directory.nodes_for([(APP, f"u{user}") for user in range(300)])

    assert found == {(APP, f"u{user}"): {nodes[user % len(nodes)]} for user in range(300)}


async def test_live_nodes_lists_nodes_with_heartbeats(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], TTL_S)
    await directory.refresh_node("node-b", [], SHORT_TTL_S)
    await directory.refresh_node("node-a", [], TTL_S)

    async def only_node_a() -> bool:
        return await directory.live_nodes() == ["node-a"]

    await eventually(only_node_a)


async def test_an_unreachable_redis_is_unavailable(namespace: str) -> None:
    directory = RedisDirectory(f"redis://127.0.0.1:{free_port()}/0", Names(namespace))

    with pytest.raises(Unavailable):
        await asyncio.wait_for(directory.start(), WAIT_S)
    await directory.close()
