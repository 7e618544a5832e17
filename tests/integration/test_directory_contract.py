"""The directory's specification, run against Redis and the in-process implementation alike,
and against a Redis Cluster and a Sentinel setup (marked ``ha``): every operation, script
and pipeline works the same in each of ``HERALD_REDIS_MODE``'s modes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from herald.adapters.directory.base import Beat, Directory, Located, NodeReport, Presence, RateDecision
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.directory.redis import RedisDirectory
from herald.core.errors import Unavailable
from herald.core.names import Names
from tests.support.redis_ha import MASTER, RedisCluster, RedisSentinel
from tests.support.servers import free_port
from tests.support.waiting import eventually

APP = "app-1"
TTL_S = 30.0
SHORT_TTL_S = 0.3
WAIT_S = 10.0


@dataclass
class Subject:
    directory: Directory
    lose_everything: Callable[[], Awaitable[None]]
    # Another handle on the same data, as a second process has (the memory directory is
    # shared within one process only, so there it is the same object).
    twin: Callable[[], Awaitable[Directory]]


def _ha_servers(request: pytest.FixtureRequest) -> RedisCluster | RedisSentinel | None:
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster")
    if request.param == "redis-sentinel":
        return request.getfixturevalue("redis_sentinel")
    return None


def _pairs(addresses: str) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, port in (entry.rsplit(":", 1) for entry in addresses.split(","))]


async def _delete_namespace_keys(redis_url: str, names: Names) -> None:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=names.key_pattern, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(
    params=[
        "memory",
        "redis",
        # The same specification on the high-availability forms (tests/support/redis_ha.py).
        pytest.param("redis-cluster", marks=pytest.mark.ha),
        pytest.param("redis-sentinel", marks=pytest.mark.ha),
    ]
)
async def subject(request: pytest.FixtureRequest, namespace: str, redis_url: str) -> AsyncIterator[Subject]:
    names = Names(namespace)
    directory: Directory
    twins: list[Directory] = []
    if request.param == "memory":
        memory = directory = MemoryDirectory()

        async def lose_everything() -> None:
            memory.clear()

        async def twin() -> Directory:
            return memory

    else:
        ha = _ha_servers(request)

        def connect() -> RedisDirectory:
            if isinstance(ha, RedisCluster):
                return RedisDirectory(ha.url, names, mode="cluster")
            if isinstance(ha, RedisSentinel):
                return RedisDirectory(None, names, mode="sentinel", sentinels=_pairs(ha.addresses), master=MASTER)
            return RedisDirectory(redis_url, names)

        directory = connect()

        async def lose_everything() -> None:
            if ha is None:
                await _delete_namespace_keys(redis_url, names)
            else:
                await asyncio.to_thread(ha.delete_matching, names.key_pattern)

        async def twin() -> Directory:
            other = connect()
            await other.start()
            twins.append(other)
            return other

    await directory.start()
    try:
        yield Subject(directory, lose_everything, twin)
    finally:
        for other in twins:
            await other.close()
        await directory.close()


@pytest.fixture
def directory(subject: Subject) -> Directory:
    return subject.directory


def conn(user_id: str, conn_id: str, app_id: str = APP, device: str | None = None, since: float = 0.0) -> Presence:
    return Presence(app_id=app_id, user_id=user_id, conn_id=conn_id, device=device, since=since)


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


async def test_a_turns_connections_of_many_users_and_apps_report_each_new_user_once(directory: Directory) -> None:
    await directory.add_connections("node-b", [conn("u0", "old")], TTL_S)
    batch = [conn(f"u{n}", f"c{n}") for n in range(1200)] + [conn("u5", "c5-tab2"), conn("u1", "other", app_id="app-2")]

    came_online = await directory.add_connections("node-a", batch, TTL_S)

    assert sorted((p.app_id, p.user_id) for p in came_online) == sorted(
        [(APP, f"u{n}") for n in range(1, 1200)] + [("app-2", "u1")]
    )
    routes = await directory.nodes_for([(APP, "u0"), (APP, "u5"), (APP, "u1199"), ("app-2", "u1")])
    assert routes == {
        (APP, "u0"): {"node-a", "node-b"},
        (APP, "u5"): {"node-a"},
        (APP, "u1199"): {"node-a"},
        ("app-2", "u1"): {"node-a"},
    }


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


async def test_a_lookup_of_many_users_finds_the_few_connected_among_them(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u3", "c1")], TTL_S)
    await directory.refresh_node("node-b", [conn("u40", "c2")], TTL_S)  # re-registered, not added
    await directory.add_connections("node-a", [conn("u7", "c3")], TTL_S)
    await directory.remove_connections("node-a", [conn("u7", "c3")])

    found = await directory.nodes_for([(APP, f"u{n}") for n in range(100)])

    assert found == {(APP, "u3"): {"node-a"}, (APP, "u40"): {"node-b"}}


async def test_a_lookup_of_many_users_still_skips_a_dead_nodes_connections(directory: Directory) -> None:
    await directory.refresh_node("node-b", [conn("u1", "c2")], TTL_S)
    await directory.refresh_node("node-a", [conn("u1", "c1"), conn("u2", "c3")], SHORT_TTL_S)
    await directory.refresh_node("node-b", [conn("u1", "c2")], TTL_S)
    many = [(APP, f"u{n}") for n in range(50)]

    async def only_node_b() -> bool:
        return await directory.nodes_for(many) == {(APP, "u1"): {"node-b"}}

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


async def test_a_beat_says_whether_the_node_was_still_known_alive(subject: Subject) -> None:
    directory = subject.directory
    assert (await directory.beat("node-a", TTL_S)).known is False
    assert (await directory.beat("node-a", TTL_S)).known is True
    await subject.lose_everything()
    assert (await directory.beat("node-a", TTL_S)).known is False


async def test_a_beat_counts_the_connections_recorded_for_the_node(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u2", "c2"), conn("u2", "c3")], TTL_S)
    await directory.add_connections("node-b", [conn("u3", "c4")], TTL_S)
    await directory.remove_connections("node-a", [conn("u2", "c3")])

    assert await directory.beat("node-a", TTL_S) == Beat(known=True, connections=2)


async def test_connections_stay_routable_past_their_first_ttl_while_their_node_beats(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await directory.beat("node-a", TTL_S)

    await asyncio.sleep(SHORT_TTL_S * 2)

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}
    assert await directory.online(APP, None, 10) == {"u1": 1}
    assert [located.conn_id for located in await directory.connections_of(APP, "u1")] == ["c1"]


async def test_a_beat_after_the_node_was_reaped_counts_none_of_its_connections(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await until_dead(directory, "node-a")
    await directory.reap_dead_nodes()

    assert await directory.beat("node-a", TTL_S) == Beat(known=False, connections=0)


async def test_resetting_a_node_forgets_its_connections_and_reports_users_left_offline(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u2", "c2")], TTL_S)
    await directory.add_connections("node-b", [conn("u2", "c3")], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 2}, TTL_S)

    assert await directory.reset_node("node-a") == [conn("u1", "c1")]

    assert await directory.nodes_for([(APP, "u1"), (APP, "u2")]) == {(APP, "u2"): {"node-b"}}
    assert await directory.nodes_for_channels([(APP, "group:g")]) == {}
    assert await directory.beat("node-a", TTL_S) == Beat(known=True, connections=0)


async def test_resetting_a_node_that_recorded_nothing_reports_nobody(directory: Directory) -> None:
    assert await directory.reset_node("node-a") == []


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


async def until_dead(directory: Directory, node_id: str) -> None:
    async def dead() -> bool:
        return node_id not in await directory.live_nodes()

    await eventually(dead)


# Presence announcements -------------------------------------------------------------
async def test_a_users_first_connection_is_reported_as_coming_online(directory: Directory) -> None:
    first = conn("u1", "c1", device="ios", since=100.0)

    assert await directory.add_connections("node-a", [first, conn("u2", "c2")], TTL_S) == [first, conn("u2", "c2")]


async def test_a_users_further_connections_are_not_reported(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S) == []
    assert await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S) == []


async def test_several_first_connections_of_one_user_in_one_call_report_one(directory: Directory) -> None:
    assert await directory.add_connections("node-a", [conn("u1", "c1"), conn("u1", "c2")], TTL_S) == [conn("u1", "c1")]


async def test_two_nodes_adding_a_users_first_connections_at_once_report_exactly_one(subject: Subject) -> None:
    other = await subject.twin()
    users = [f"u{index}" for index in range(50)]

    reported = await asyncio.gather(
        *(subject.directory.add_connections("node-a", [conn(user, f"a-{user}")], TTL_S) for user in users),
        *(other.add_connections("node-b", [conn(user, f"b-{user}")], TTL_S) for user in users),
    )

    assert sorted(presence.user_id for batch in reported for presence in batch) == sorted(users)


async def test_a_users_last_connection_is_reported_as_going_offline(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)

    assert await directory.remove_connections("node-a", [conn("u1", "c1")]) == []
    assert await directory.remove_connections("node-b", [conn("u1", "c2")]) == [conn("u1", "c2")]


async def test_removing_unknown_connections_reports_nothing(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.remove_connections("node-a", [conn("u1", "c9"), conn("u2", "c2")]) == []
    assert await directory.remove_connections("node-a", []) == []


async def test_a_user_gone_offline_is_reported_once(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.remove_connections("node-a", [conn("u1", "c1")]) == [conn("u1", "c1")]
    assert await directory.remove_connections("node-a", [conn("u1", "c1")]) == []


async def test_two_nodes_removing_a_users_last_connections_at_once_report_exactly_one(subject: Subject) -> None:
    other = await subject.twin()
    users = [f"u{index}" for index in range(50)]
    for user in users:
        await subject.directory.add_connections("node-a", [conn(user, f"a-{user}")], TTL_S)
        await other.add_connections("node-b", [conn(user, f"b-{user}")], TTL_S)

    reported = await asyncio.gather(
        *(subject.directory.remove_connections("node-a", [conn(user, f"a-{user}")]) for user in users),
        *(other.remove_connections("node-b", [conn(user, f"b-{user}")]) for user in users),
    )

    assert sorted(presence.user_id for batch in reported for presence in batch) == sorted(users)


async def test_a_user_whose_routes_expired_is_still_reported_offline(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await asyncio.sleep(SHORT_TTL_S * 2)

    assert await directory.remove_connections("node-a", [conn("u1", "c1")]) == [conn("u1", "c1")]


async def test_a_user_back_after_going_offline_is_reported_online_again(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.remove_connections("node-a", [conn("u1", "c1")])

    assert await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S) == [conn("u1", "c2")]


async def test_a_heartbeat_after_the_data_is_lost_restores_presence_without_reporting_it(subject: Subject) -> None:
    directory = subject.directory
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await subject.lose_everything()

    await directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S)

    assert await directory.online(APP, None, 10) == {"u1": 1}
    assert await directory.add_connections("node-a", [conn("u1", "c2")], TTL_S) == []
    assert await directory.remove_connections("node-a", [conn("u1", "c1"), conn("u1", "c2")]) == [conn("u1", "c2")]


# Presence queries ---------------------------------------------------------------------
async def test_connections_of_lists_device_and_since_oldest_first(directory: Directory) -> None:
    await directory.add_connections("node-b", [conn("u1", "c2", device="web", since=200.5)], TTL_S)
    await directory.add_connections("node-a", [conn("u1", "c1", device="ios", since=100.25)], TTL_S)
    await directory.add_connections("node-a", [conn("u2", "c3")], TTL_S)

    assert await directory.connections_of(APP, "u1") == [
        Located("c1", "node-a", "ios", 100.25),
        Located("c2", "node-b", "web", 200.5),
    ]


async def test_connections_of_leaves_out_connections_on_dead_nodes(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1", since=1.0)], SHORT_TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2", since=2.0)], TTL_S)

    await until_dead(directory, "node-a")

    assert await directory.connections_of(APP, "u1") == [Located("c2", "node-b", None, 2.0)]


async def test_connections_of_an_unknown_user_is_empty(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1", app_id="app-2")], TTL_S)

    assert await directory.connections_of(APP, "u1") == []
    assert await directory.connections_of(APP, "nobody") == []


async def test_online_counts_the_connections_of_the_given_users(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u1", "c2"), conn("u2", "c3")], TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c4")], TTL_S)

    assert await directory.online(APP, ["u1", "u2", "nobody"], 10) == {"u1": 3, "u2": 1}
    assert await directory.online(APP, [], 10) == {}


async def test_online_counts_of_many_users_find_the_few_connected_among_them(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u3", "c1"), conn("u3", "c2")], TTL_S)
    await directory.refresh_node("node-b", [conn("u40", "c3")], TTL_S)  # re-registered, not added
    await directory.add_connections("node-a", [conn("u7", "c4")], TTL_S)
    await directory.remove_connections("node-a", [conn("u7", "c4")])

    counted = await directory.online(APP, [f"u{n}" for n in range(100)], 100)

    assert counted == {"u3": 2, "u40": 1}


async def test_online_without_users_lists_the_app_in_user_id_order_up_to_the_limit(directory: Directory) -> None:
    users = ["u3", "u1", "u4", "u2", "u5"]
    await directory.add_connections("node-a", [conn(user, f"c-{user}") for user in users], TTL_S)
    await directory.add_connections("node-a", [conn("u2", "c-extra")], TTL_S)
    await directory.remove_connections("node-a", [conn("u1", "c-u1")])

    listed = await directory.online(APP, None, 3)

    assert list(listed.items()) == [("u2", 2), ("u3", 1), ("u4", 1)]


async def test_online_leaves_out_users_whose_connections_are_all_on_dead_nodes(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u2", "c2")], SHORT_TTL_S)
    await directory.add_connections("node-b", [conn("u3", "c3"), conn("u2", "c4")], TTL_S)

    await until_dead(directory, "node-a")

    assert await directory.online(APP, ["u1", "u2", "u3"], 10) == {"u2": 1, "u3": 1}
    assert await directory.online(APP, None, 1) == {"u2": 1}
    assert await directory.online(APP, None, 10) == {"u2": 1, "u3": 1}


async def test_online_lists_only_the_apps_own_users(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u2", "c2", app_id="app-2")], TTL_S)

    assert await directory.online(APP, None, 10) == {"u1": 1}
    assert await directory.online("app-2", ["u1", "u2"], 10) == {"u2": 1}


# Reaping dead nodes -------------------------------------------------------------------
async def test_reaping_reports_users_whose_last_connection_was_on_a_dead_node(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await until_dead(directory, "node-a")

    assert await directory.reap_dead_nodes() == [conn("u1", "c1")]


async def test_reaping_reports_users_whose_routes_expired_with_the_node(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1"), conn("u1", "c2")], SHORT_TTL_S)
    await asyncio.sleep(SHORT_TTL_S * 2)

    reaped = await directory.reap_dead_nodes()

    assert [(presence.user_id, presence.conn_id in {"c1", "c2"}) for presence in reaped] == [("u1", True)]


async def test_reaping_does_not_report_users_connected_elsewhere(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)
    await until_dead(directory, "node-a")

    assert await directory.reap_dead_nodes() == []
    assert await directory.remove_connections("node-b", [conn("u1", "c2")]) == [conn("u1", "c2")]


async def test_reaping_leaves_live_nodes_alone(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "broadcast"): 1}, TTL_S)

    assert await directory.reap_dead_nodes() == []

    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}
    assert await directory.nodes_for_channels([(APP, "broadcast")]) == {(APP, "broadcast"): {"node-a"}}
    assert await directory.live_nodes() == ["node-a"]


async def test_a_dead_node_is_reaped_by_one_caller_only(subject: Subject) -> None:
    other = await subject.twin()
    await subject.directory.add_connections("node-a", [conn(f"u{i}", f"c{i}") for i in range(20)], SHORT_TTL_S)
    await until_dead(subject.directory, "node-a")

    reaped = await asyncio.gather(subject.directory.reap_dead_nodes(), other.reap_dead_nodes())

    assert sorted(presence.user_id for batch in reaped for presence in batch) == sorted(f"u{i}" for i in range(20))
    assert await subject.directory.reap_dead_nodes() == []


async def test_a_reaped_node_coming_back_has_no_routes_left(directory: Directory) -> None:
    # node-b keeps u1's routes from expiring, so only reaping can remove node-a's c1.
    await directory.add_connections("node-a", [conn("u1", "c1")], SHORT_TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 2}, TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)
    await until_dead(directory, "node-a")
    await directory.reap_dead_nodes()

    assert await directory.refresh_node("node-a", [], TTL_S) is False

    assert await directory.connections_of(APP, "u1") == [Located("c2", "node-b", None, 0.0)]
    assert await directory.nodes_for_channels([(APP, "group:g")]) == {}


# Removing a node ----------------------------------------------------------------------
async def test_a_removed_node_coming_back_has_no_routes_left(directory: Directory) -> None:
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 1}, TTL_S)
    await directory.add_connections("node-b", [conn("u1", "c2")], TTL_S)

    await directory.remove_node("node-a", [])
    await directory.refresh_node("node-a", [], TTL_S)

    assert await directory.connections_of(APP, "u1") == [Located("c2", "node-b", None, 0.0)]
    assert await directory.nodes_for_channels([(APP, "group:g")]) == {}


async def test_a_removed_node_leaves_presence_reports_to_remove_connections(directory: Directory) -> None:
    # A node that only stepped out of routing re-asserts its connections when back: its
    # users did not go offline. One that drains reports them with remove_connections.
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)

    await directory.remove_node("node-a", [conn("u1", "c1")])

    assert await directory.reap_dead_nodes() == []
    await directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S)
    assert await directory.remove_connections("node-a", [conn("u1", "c1")]) == [conn("u1", "c1")]


# Channel routes -----------------------------------------------------------------------
async def test_a_channel_is_routed_to_the_nodes_with_readers(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], TTL_S)
    await directory.refresh_node("node-b", [], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 2, (APP, "broadcast"): 3}, TTL_S)
    await directory.set_channel_counts("node-b", {(APP, "group:g"): 1}, TTL_S)

    assert await directory.nodes_for_channels([(APP, "group:g"), (APP, "broadcast"), (APP, "group:none")]) == {
        (APP, "group:g"): {"node-a", "node-b"},
        (APP, "broadcast"): {"node-a"},
    }
    assert await directory.nodes_for_channels([]) == {}


async def test_a_zero_count_removes_the_node_from_the_channel(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], TTL_S)
    await directory.refresh_node("node-b", [], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 2}, TTL_S)
    await directory.set_channel_counts("node-b", {(APP, "group:g"): 1}, TTL_S)

    await directory.set_channel_counts("node-a", {(APP, "group:g"): 0}, TTL_S)

    assert await directory.nodes_for_channels([(APP, "group:g")]) == {(APP, "group:g"): {"node-b"}}


async def test_channel_routes_expire_without_a_new_write(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 1}, SHORT_TTL_S)

    async def unrouted() -> bool:
        return await directory.nodes_for_channels([(APP, "group:g")]) == {}

    await eventually(unrouted)
    assert await directory.live_nodes() == ["node-a"]


async def test_channel_routes_of_dead_nodes_are_not_returned(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], SHORT_TTL_S)
    await directory.refresh_node("node-b", [], TTL_S)
    await directory.set_channel_counts("node-a", {(APP, "group:g"): 1}, TTL_S)
    await directory.set_channel_counts("node-b", {(APP, "group:g"): 1}, TTL_S)

    await until_dead(directory, "node-a")

    assert await directory.nodes_for_channels([(APP, "group:g")]) == {(APP, "group:g"): {"node-b"}}


async def test_channels_of_other_apps_are_separate(directory: Directory) -> None:
    await directory.refresh_node("node-a", [], TTL_S)
    await directory.set_channel_counts("node-a", {("app-2", "group:g"): 1}, TTL_S)

    assert await directory.nodes_for_channels([(APP, "group:g"), ("app-2", "group:g")]) == {
        ("app-2", "group:g"): {"node-a"}
    }


# Rate limits --------------------------------------------------------------------------
async def test_take_allows_up_to_the_burst_then_refuses_with_the_wait(directory: Directory) -> None:
    for _ in range(3):
        assert await directory.take(APP, 1, 1.0, 3) == RateDecision(True, 0.0)

    refused = await directory.take(APP, 1, 1.0, 3)

    assert refused.allowed is False
    assert 0.8 < refused.retry_after_s <= 1.0


async def test_a_refused_take_takes_nothing(directory: Directory) -> None:
    assert (await directory.take(APP, 3, 0.01, 5)).allowed
    assert not (await directory.take(APP, 3, 0.01, 5)).allowed

    assert (await directory.take(APP, 2, 0.01, 5)).allowed


async def test_tokens_refill_at_the_rate(directory: Directory) -> None:
    assert (await directory.take(APP, 2, 20.0, 2)).allowed
    refused = await directory.take(APP, 1, 20.0, 2)
    assert not refused.allowed and refused.retry_after_s <= 0.05

    await asyncio.sleep(0.1)

    assert (await directory.take(APP, 2, 20.0, 2)).allowed


async def test_each_app_has_its_own_bucket(directory: Directory) -> None:
    assert (await directory.take(APP, 5, 0.01, 5)).allowed

    assert (await directory.take("app-2", 5, 0.01, 5)).allowed
    assert not (await directory.take(APP, 1, 0.01, 5)).allowed


async def test_a_take_larger_than_the_burst_waits_for_a_full_bucket_and_leaves_it_in_debt(
    directory: Directory,
) -> None:
    assert (await directory.take(APP, 8, 10.0, 5)).allowed

    again = await directory.take(APP, 8, 10.0, 5)
    small = await directory.take(APP, 1, 10.0, 5)

    # 3 tokens owed: a full bucket (5) is 8 tokens away, one token 4 away, at 10 a second.
    assert not again.allowed and 0.7 < again.retry_after_s <= 0.8
    assert not small.allowed and 0.3 < small.retry_after_s <= 0.4


async def test_callers_share_one_bucket(subject: Subject) -> None:
    other = await subject.twin()

    decisions = await asyncio.gather(
        *(handle.take(APP, 1, 0.01, 10) for handle in [subject.directory, other] for _ in range(15))
    )

    assert sum(decision.allowed for decision in decisions) == 10


async def test_a_bucket_without_a_rate_or_burst_is_refused_as_a_bug(directory: Directory) -> None:
    with pytest.raises(ValueError):
        await directory.take(APP, 1, 0.0, 5)
    with pytest.raises(ValueError):
        await directory.take(APP, 1, 1.0, 0)


# Redis faults -------------------------------------------------------------------------
class Relay:
    """A TCP relay in front of Redis that a test can cut, as a network fault would."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def test_node_reports_are_read_back_by_another_process(subject: Subject) -> None:
    report = NodeReport("node-a", 3, {APP: 2, "app-2": 1}, 5, at_ms=1_700_000_000_000)
    await subject.directory.report_node(report, TTL_S)

    assert await (await subject.twin()).node_reports() == [report]


async def test_a_node_that_stops_reporting_is_forgotten_after_its_report_ttl(directory: Directory) -> None:
    await directory.report_node(NodeReport("node-a", 1, {APP: 1}, None, at_ms=1), SHORT_TTL_S)
    await directory.report_node(NodeReport("node-b", 0, {}, 0, at_ms=1), TTL_S)

    async def only_b_left() -> bool:
        return [report.node_id for report in await directory.node_reports()] == ["node-b"]

    await eventually(only_b_left)


async def test_message_rates_average_the_counts_of_whole_seconds_in_the_window(subject: Subject) -> None:
    now_s = 1_800_000_000
    await subject.directory.count_messages({APP: 30, "app-2": 5}, now_s - 2)
    await subject.directory.count_messages({APP: 10}, now_s - 1)
    await subject.directory.count_messages({APP: 999}, now_s)  # the second under way: not yet counted

    rates = await (await subject.twin()).message_rates(10, now_s)

    assert rates == {APP: 4.0, "app-2": 0.5}


async def test_a_redis_lost_after_start_makes_every_call_unavailable(namespace: str, redis_url: str) -> None:
    relay = Relay(redis_url)
    await relay.start()
    directory = RedisDirectory(f"redis://127.0.0.1:{relay.port}/0", Names(namespace))
    await directory.start()
    await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S)
    await relay.cut()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: directory.add_connections("node-a", [conn("u2", "c2")], TTL_S),
        lambda: directory.remove_connections("node-a", [conn("u1", "c1")]),
        lambda: directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S),
        lambda: directory.remove_node("node-a", []),
        lambda: directory.nodes_for([(APP, "u1")]),
        lambda: directory.reap_dead_nodes(),
        lambda: directory.connections_of(APP, "u1"),
        lambda: directory.online(APP, None, 10),
        lambda: directory.online(APP, ["u1"], 10),
        lambda: directory.set_channel_counts("node-a", {(APP, "broadcast"): 1}, TTL_S),
        lambda: directory.nodes_for_channels([(APP, "broadcast")]),
        lambda: directory.take(APP, 1, 1.0, 5),
    ]
    try:
        for call in calls:
            with pytest.raises(Unavailable):
                await asyncio.wait_for(call(), WAIT_S)
    finally:
        await directory.close()


async def test_scripts_redis_forgot_are_loaded_again(namespace: str, redis_url: str) -> None:
    directory = RedisDirectory(redis_url, Names(namespace))
    await directory.start()
    client = aioredis.from_url(redis_url)
    try:
        # As after a Redis restart: the server no longer knows the scripts by their sha.
        await client.script_flush()

        assert await directory.add_connections("node-a", [conn("u1", "c1")], TTL_S) == [conn("u1", "c1")]
        assert (await directory.take(APP, 1, 1.0, 5)).allowed
    finally:
        await client.aclose()
        await directory.close()


async def test_a_node_that_withdrew_is_not_routed_at_once(directory: Directory) -> None:
    await directory.refresh_node("node-a", [conn("u1", "c1")], TTL_S)
    assert await directory.nodes_for([(APP, "u1")]) == {(APP, "u1"): {"node-a"}}
    await directory.remove_node("node-a", [conn("u1", "c1")])
    assert await directory.nodes_for([(APP, "u1")]) == {}
