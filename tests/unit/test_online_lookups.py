"""collect's online flags: lookups of one event-loop turn share one directory round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from herald.adapters.directory.base import Presence
from herald.adapters.directory.memory import MemoryDirectory
from herald.core.errors import Unavailable
from herald.services.collect.online import OnlineLookups

APP = "app_00000000000000a1"


class CountingDirectory(MemoryDirectory):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[list[tuple[str, str]]] = []
        self.down = False

    async def nodes_for(self, recipients: Sequence[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        if self.down:
            raise Unavailable("directory down")
        self.lookups.append(list(recipients))
        return await super().nodes_for(recipients)


async def connected(*users: str) -> CountingDirectory:
    directory = CountingDirectory()
    conns = [Presence(APP, user, f"c-{user}") for user in users]
    await directory.add_connections("node-1", conns, 30)
    await directory.refresh_node("node-1", conns, 30)
    return directory


async def test_lookups_made_together_share_one_directory_round_trip() -> None:
    directory = await connected("ann")
    lookups = OnlineLookups(directory)
    answers = await asyncio.gather(
        lookups.online(APP, ["user:ann"]), lookups.online(APP, ["user:bob"]), lookups.online(APP, ["user:ann"])
    )
    assert answers == [{"user:ann": True}, {"user:bob": False}, {"user:ann": True}]
    assert directory.lookups == [[(APP, "ann"), (APP, "bob")]]


async def test_groups_and_broadcast_are_unknown_without_asking() -> None:
    directory = await connected()
    answer = await OnlineLookups(directory).online(APP, ["group:ops", "broadcast"])
    assert answer == {"group:ops": None, "broadcast": None}
    assert directory.lookups == []


async def test_with_the_directory_down_every_user_is_unknown() -> None:
    directory = await connected("ann")
    directory.down = True
    lookups = OnlineLookups(directory)
    answers = await asyncio.gather(lookups.online(APP, ["user:ann"]), lookups.online(APP, ["user:bob"]))
    assert answers == [{"user:ann": None}, {"user:bob": None}]


async def test_a_lookup_cancelled_before_it_ran_leaves_nobody_waiting() -> None:
    lookups = OnlineLookups(await connected("ann"))
    waiting = asyncio.ensure_future(lookups.online(APP, ["user:ann"]))
    while not lookups._tasks:  # until the lookup task is created, before it runs
        await asyncio.sleep(0)
    for task in list(lookups._tasks):  # what the loop does to leftover tasks at shutdown
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
