"""A push node's presence writes: the connects and disconnects of a loop turn share one
directory call each, in the order they happened."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.base import ChannelKey, Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core import codec
from herald.core.errors import Unavailable
from herald.services.push.node import PushNode
from herald.services.push.presence import MAX_BATCH, Added, PresenceWriter
from tests.support.pushnode import CountingStore, connect, settle

APP = "app-1"
BROADCAST = (APP, "broadcast")


class LoggedDirectory(MemoryDirectory):
    """The memory directory, logging each write with its size; down on request."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []
        self.down = False
        self.gate: asyncio.Event | None = None

    async def add_connections(self, node_id: str, conns: Sequence[Presence], ttl_s: float) -> list[Presence]:
        self.log.append(("add", len(conns)))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Unavailable("directory down")
        return await super().add_connections(node_id, conns, ttl_s)

    async def remove_connections(self, node_id: str, conns: Sequence[Presence]) -> list[Presence]:
        self.log.append(("remove", len(conns)))
        if self.down:
            raise Unavailable("directory down")
        return await super().remove_connections(node_id, conns)

    async def set_channel_counts(self, node_id: str, counts: Mapping[ChannelKey, int], ttl_s: float) -> None:
        self.log.append(("counts", len(counts)))
        if self.down:
            raise Unavailable("directory down")
        await super().set_channel_counts(node_id, counts, ttl_s)


def writer(directory: LoggedDirectory) -> PresenceWriter:
    return PresenceWriter(directory, "node-a", 30.0, lambda keys: dict.fromkeys(keys, 1))


def presence(user: str, conn: str) -> Presence:
    return Presence(APP, user, conn)


async def test_connects_of_one_loop_turn_share_one_write() -> None:
    directory = LoggedDirectory()
    presences = writer(directory)

    added = await asyncio.gather(*(presences.add(presence(f"u{i}", f"c{i}"), [BROADCAST]) for i in range(20)))

    assert directory.log == [("add", 20), ("counts", 1)]
    assert all(answer == Added(True, True, True) for answer in added)
    assert len(await directory.nodes_for([(APP, f"u{i}") for i in range(20)])) == 20


async def test_only_a_users_first_connection_is_reported_first() -> None:
    presences = writer(LoggedDirectory())

    one, two = await asyncio.gather(
        presences.add(presence("ann", "c1"), [BROADCAST]), presences.add(presence("ann", "c2"), [BROADCAST])
    )

    assert [one.first, two.first] == [True, False]


async def test_disconnects_of_one_loop_turn_share_one_write_and_report_last_connections() -> None:
    directory = LoggedDirectory()
    presences = writer(directory)
    await asyncio.gather(*(presences.add(presence("ann", f"c{i}"), []) for i in range(3)))
    await presences.add(presence("bob", "b1"), [])
    directory.log.clear()

    lasts = await asyncio.gather(
        presences.remove(presence("ann", "c0"), [BROADCAST]),
        presences.remove(presence("ann", "c1"), [BROADCAST]),
        presences.remove(presence("bob", "b1"), [BROADCAST]),
    )

    assert directory.log == [("remove", 3), ("counts", 1)]
    assert lasts == [False, False, True]


async def test_requests_arriving_while_a_write_is_out_go_together_in_the_next() -> None:
    directory = LoggedDirectory()
    directory.gate = asyncio.Event()
    presences = writer(directory)
    first = asyncio.ensure_future(presences.add(presence("ann", "c1"), []))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(presences.add(presence(f"u{i}", f"c{i}"), [])) for i in range(5)]
    await asyncio.sleep(0.01)
    directory.gate.set()

    await asyncio.gather(first, *later)

    assert directory.log == [("add", 1), ("add", 5)]


async def test_a_removal_asked_while_its_addition_is_out_is_written_after_it() -> None:
    directory = LoggedDirectory()
    directory.gate = asyncio.Event()
    presences = writer(directory)
    adding = asyncio.ensure_future(presences.add(presence("ann", "c1"), []))
    await asyncio.sleep(0.01)
    removing = asyncio.ensure_future(presences.remove(presence("ann", "c1"), []))
    await asyncio.sleep(0.01)
    directory.gate.set()

    assert (await adding).first and await removing is True
    assert directory.log == [("add", 1), ("remove", 1)]
    assert await directory.nodes_for([(APP, "ann")]) == {}


async def test_a_write_carries_at_most_max_batch_requests() -> None:
    directory = LoggedDirectory()
    presences = writer(directory)

    await asyncio.gather(*(presences.add(presence(f"u{i}", f"c{i}"), []) for i in range(MAX_BATCH + 1)))

    assert directory.log == [("add", MAX_BATCH), ("add", 1)]


async def test_a_directory_down_is_reported_to_each_request_not_raised() -> None:
    directory = LoggedDirectory()
    presences = writer(directory)
    await presences.add(presence("ann", "c1"), [])
    directory.down = True

    added, removed = await asyncio.gather(
        presences.add(presence("bob", "b1"), [BROADCAST]), presences.remove(presence("ann", "c1"), [BROADCAST])
    )

    assert added == Added(first=False, presence_written=False, counts_written=False)
    assert removed is None


class RecordingBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        self.events.append((routing_key, codec.loads(body)))


async def test_a_connect_and_disconnect_storm_announces_each_user_once_in_its_own_event() -> None:
    bus = RecordingBus()
    sqlite = SqliteStore(":memory:")
    await sqlite.start()
    node = PushNode("node-a", bus, MemoryDirectory(), CountingStore(sqlite), 10.0)  # type: ignore[arg-type]
    users = [f"u{i}" for i in range(10)]

    conns = await asyncio.gather(*(connect(node, user) for user in [*users, *users]))
    await settle(node)
    online = [(key, event["user_id"]) for key, event in bus.events]
    bus.events.clear()
    await asyncio.gather(*(node.detach(conn) for conn in conns))
    await settle(node)
    offline = [(key, event["user_id"]) for key, event in bus.events]
    await sqlite.close()

    assert sorted(online) == [(f"{APP}.user.online", user) for user in sorted(users)]
    assert sorted(offline) == [(f"{APP}.user.offline", user) for user in sorted(users)]
