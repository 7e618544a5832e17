"""Accepting a batch costs the store the same round trips whatever its size (issue 16:
"store round trips per batch independent of its size"), counted as the commands PyMongo
sends to the MongoDB-wire server (or the mongod of HERALD_MONGO_URL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import monitoring

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.store.mongo import MongoStore
from herald.messaging.accept import Acceptor, Limits, draft_for_users

LIMITS = Limits(max_payload=65_536, max_recipients=10_000, default_ttl_s=3600)


class _Commands(monitoring.CommandListener):
    """The commands sent, by name, while ``counting`` is set."""

    def __init__(self) -> None:
        self.counting = False
        self.sent: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.counting:
            self.sent.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

    def failed(self, event: monitoring.CommandFailedEvent) -> None: ...


@pytest.fixture
async def counted(mongo_url: str, namespace: str) -> AsyncIterator[tuple[Acceptor, _Commands]]:
    commands = _Commands()
    monitoring.register(commands)  # applies to the clients created after it
    store = MongoStore(mongo_url, database=namespace)
    await store.start()
    bus = MemoryBus()
    try:
        yield Acceptor(store, bus), commands
    finally:
        commands.counting = False
        await store.close()


async def _commands_to_accept(acceptor: Acceptor, commands: _Commands, recipients: int) -> list[str]:
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    users = [f"u{n}" for n in range(recipients)]
    # Each recipient's counter exists already: the steady state, not a first message ever.
    await acceptor.accept(app_id, [draft_for_users(users, "warm", {}, None, LIMITS)])
    commands.sent.clear()
    commands.counting = True
    [messages] = await acceptor.accept(app_id, [draft_for_users(users, "news", {"n": 1}, None, LIMITS)])
    commands.counting = False
    assert len(messages) == recipients
    return sorted(commands.sent)


async def test_a_batch_to_a_thousand_users_costs_the_round_trips_of_a_batch_to_ten(
    counted: tuple[Acceptor, _Commands],
) -> None:
    acceptor, commands = counted

    ten = await _commands_to_accept(acceptor, commands, 10)
    thousand = await _commands_to_accept(acceptor, commands, 1000)

    assert thousand == ten
    # Raise the counters from the values this store last wrote (no read), insert, mark published.
    assert len(ten) <= 3, ten
