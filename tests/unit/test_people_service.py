"""collect's PeopleService called directly: joins, leaves, members, who is online,
presence and kick, on the SQLite store and the memory directory, without HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest

from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.commands import Join, Kick, Leave
from herald.core.errors import BadRequest, Conflict
from herald.core.model import App, AppConfig, AppLimits
from herald.core.settings import Settings
from herald.messaging.appconfig import AppConfigs
from herald.services.collect.people_service import PeopleService
from herald.services.collect.quotas import Quotas
from tests.support.nodes import NodeCommands

APP = "app_00000000000000a1"


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    impl = SqliteStore(":memory:")
    await impl.start()
    await impl.insert_app(App(APP, "shop", time.time()))
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory()


@pytest.fixture
def bus() -> NodeCommands:
    return NodeCommands()


@pytest.fixture
def people(store: SqliteStore, directory: MemoryDirectory, bus: NodeCommands) -> PeopleService:
    settings = Settings.from_env("standalone", {"HERALD_ADMIN_TOKEN": "a" * 40, "HERALD_SERVICE_TOKEN": "s" * 40})
    return PeopleService(store, directory, bus, Quotas(settings, AppConfigs(store), directory))


async def connect(directory: MemoryDirectory, user_id: str, node: str = "node-a", conn: str = "c1") -> None:
    await directory.add_connections(node, [Presence(APP, user_id, f"{node}-{conn}", "phone", 1.0)], 30)


async def test_a_join_adds_the_member_after_the_groups_last_offset(people: PeopleService, store: SqliteStore) -> None:
    await store.allocate_offsets(APP, {"group:ops": 4})
    membership = await people.join(APP, "ops", "7")
    assert (membership.joined, membership.joined_after) == (True, 4)
    assert await store.groups_of(APP, "7") == {"ops": 4}


async def test_joining_again_keeps_the_first_membership(people: PeopleService, store: SqliteStore) -> None:
    await people.join(APP, "ops", "7")
    await store.allocate_offsets(APP, {"group:ops": 2})
    again = await people.join(APP, "ops", "7")
    assert (again.joined, again.joined_after) == (False, 0)


async def test_a_join_is_sent_to_the_nodes_holding_the_user_even_when_already_a_member(
    people: PeopleService, directory: MemoryDirectory, bus: NodeCommands
) -> None:
    await connect(directory, "7")
    await people.join(APP, "ops", "7")
    await people.join(APP, "ops", "7")
    assert bus.sent == {"node-a": [Join(APP, "7", "group:ops", 0)] * 2}


async def test_only_a_new_membership_publishes_a_group_joined_event(people: PeopleService, bus: NodeCommands) -> None:
    await people.join(APP, "ops", "7")
    await people.join(APP, "ops", "7")
    assert [(e["type"], e["user_id"], e["group"]) for e in bus.events] == [("group.joined", "7", "ops")]


async def test_a_join_past_the_apps_groups_per_user_is_a_conflict(people: PeopleService, store: SqliteStore) -> None:
    await store.set_app_config(APP, AppConfig(limits=AppLimits(groups_per_user=1)))
    await people.join(APP, "ops", "7")
    with pytest.raises(Conflict) as raised:
        await people.join(APP, "dev", "7")
    assert raised.value.code == "too_many_groups"


async def test_a_join_to_a_malformed_group_is_a_bad_request(people: PeopleService) -> None:
    with pytest.raises(BadRequest) as raised:
        await people.join(APP, "no spaces", "7")
    assert raised.value.code == "invalid_group"


async def test_a_leave_ends_the_membership_and_tells_the_users_nodes(
    people: PeopleService, store: SqliteStore, directory: MemoryDirectory, bus: NodeCommands
) -> None:
    await people.join(APP, "ops", "7")
    await connect(directory, "7")
    await people.leave(APP, "ops", "7")
    assert await store.groups_of(APP, "7") == {}
    assert bus.sent == {"node-a": [Leave(APP, "7", "group:ops")]}


async def test_leaving_a_group_one_is_not_in_publishes_no_event(people: PeopleService, bus: NodeCommands) -> None:
    await people.leave(APP, "ops", "7")
    assert bus.events == []


async def test_members_are_paged_with_their_online_state(people: PeopleService, directory: MemoryDirectory) -> None:
    for user in ("1", "2", "3"):
        await people.join(APP, "ops", user)
    await connect(directory, "2")
    page = await people.members(APP, "ops", "", 2)
    assert [(m.user_id, m.online, m.connections) for m in page.members] == [("1", False, 0), ("2", True, 1)]
    assert page.next == "2"
    assert (await people.members(APP, "ops", "2", 2)).next is None


async def test_online_in_a_group_counts_only_its_members(people: PeopleService, directory: MemoryDirectory) -> None:
    await people.join(APP, "ops", "1")
    await connect(directory, "1")
    await connect(directory, "2")
    online = await people.online(APP, "ops", 100)
    assert [(u.user_id, u.connections) for u in online.users] == [("1", 1)]


async def test_online_stops_at_the_limit_and_says_so(people: PeopleService, directory: MemoryDirectory) -> None:
    for user in ("1", "2", "3"):
        await connect(directory, user)
    online = await people.online(APP, None, 2)
    assert ([u.user_id for u in online.users], online.truncated) == (["1", "2"], True)


async def test_online_in_a_group_stops_scanning_members_at_the_bound_and_says_so(
    people: PeopleService, directory: MemoryDirectory
) -> None:
    for user in ("1", "2", "3"):
        await people.join(APP, "ops", user)
        await connect(directory, user)
    with (
        patch("herald.services.collect.people_service.MAX_PAGE", 1),
        patch("herald.services.collect.people_service.MAX_GROUP_SCAN", 2),
    ):
        online = await people.online(APP, "ops", 100)
    assert ([u.user_id for u in online.users], online.truncated) == (["1", "2"], True)


async def test_presence_lists_each_live_connection_with_its_node_and_device(
    people: PeopleService, directory: MemoryDirectory
) -> None:
    await connect(directory, "7", "node-a")
    await connect(directory, "7", "node-b")
    presence = await people.presence(APP, "7")
    assert presence.online is True
    assert sorted((c.node, c.device) for c in presence.connections) == [("node-a", "phone"), ("node-b", "phone")]


async def test_a_kick_is_sent_to_each_node_holding_the_user_and_counts_them(
    people: PeopleService, directory: MemoryDirectory, bus: NodeCommands
) -> None:
    await connect(directory, "7", "node-a")
    await connect(directory, "7", "node-b")
    kicked = await people.kick(APP, "7")
    assert kicked.nodes == 2
    assert bus.sent == {node: [Kick(APP, "7", None, "kicked")] for node in ("node-a", "node-b")}


async def test_kicking_a_user_with_no_connections_reaches_no_node(people: PeopleService, bus: NodeCommands) -> None:
    assert (await people.kick(APP, "7")).nodes == 0
    assert bus.sent == {}
