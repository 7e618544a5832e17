"""collect when a dependency fails: nothing half-accepted, nothing acknowledged lost."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from unittest.mock import patch

import httpx
import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.base import Store
from herald.adapters.store.mongo import MongoStore
from herald.adapters.store.sqlite import SqliteStore
from herald.core import codec
from herald.core.credentials import secret_hash
from herald.core.errors import Unavailable
from herald.core.model import App, now_ms
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.ops import metrics
from herald.services.collect.app import create_app
from herald.services.collect.outbox import OutboxSweeper
from tests.support.servers import MongoWire

KEY = "hk_test-key"
APP_ID = "app_00000000000000aa"


class BrokenBus(MemoryBus):
    """A bus whose broker is down: every publish fails the way AmqpBus's do."""

    async def publish_dispatch(self, body: bytes) -> None:
        raise Unavailable("broker down")

    async def publish_to_nodes(self, bodies: Mapping[str, bytes]) -> None:
        raise Unavailable("broker down")


async def _seed(store: Store) -> None:
    await store.insert_app(App(APP_ID, "test", time.time()))
    await store.replace_api_key(APP_ID, secret_hash(KEY))


def _client(store: Store, bus: MemoryBus) -> httpx.AsyncClient:
    app = create_app(Settings.from_env("standalone", {}), store, Acceptor(store, bus), MemoryDirectory(), bus)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collect", headers={"authorization": f"Bearer {KEY}"}
    )


def _send(user: str = "u1") -> dict:
    return {"to": {"users": [user]}, "event": "e", "data": {"n": 1}}


@pytest.fixture
def mongo_wire(tmp_path: Path) -> Iterator[MongoWire]:
    server = MongoWire(tmp_path / "mongo")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mongo_store(mongo_wire: MongoWire) -> AsyncIterator[MongoStore]:
    store = MongoStore(mongo_wire.url, "collect_failures", timeout_s=1.0)
    await store.start()
    await _seed(store)
    try:
        yield store
    finally:
        await store.close()


async def test_store_down_answers_503_and_queues_nothing(mongo_wire: MongoWire, mongo_store: MongoStore) -> None:
    bus = MemoryBus()
    await bus.start()
    async with _client(mongo_store, bus) as collect:
        assert (await collect.post("/v1/messages", json=_send())).status_code == 202
        queued = len(bus._dispatch)
        mongo_wire.stop()
        response = await collect.post("/v1/messages", json=_send())
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"]
        assert len(bus._dispatch) == queued, "a message the store refused reached the bus"
        mongo_wire.start()
        recovered = await collect.post("/v1/messages", json=_send())
        assert recovered.status_code == 202, recovered.text
        history = await collect.get("/v1/channels/user:u1/messages")
        assert [m["offset"] for m in history.json()["messages"]] == [1, recovered.json()["messages"][0]["offset"]]


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "herald.db"))
    await store.start()
    await _seed(store)
    try:
        yield store
    finally:
        await store.close()


async def test_bus_down_after_the_store_write_still_accepts_and_leaves_it_for_the_outbox(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    bus = BrokenBus()
    await bus.start()
    async with _client(store, bus) as collect:
        response = await collect.post("/v1/messages", json=_send())
    assert response.status_code == 202
    [accepted] = response.json()["messages"]
    stored = await store.get_message(APP_ID, accepted["id"], time.time())
    assert stored is not None and stored.published == "pending"


async def test_a_published_message_is_marked_published(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    bus = MemoryBus()
    await bus.start()
    async with _client(store, bus) as collect:
        [accepted] = (await collect.post("/v1/messages", json=_send())).json()["messages"]
    stored = await store.get_message(APP_ID, accepted["id"], time.time())
    assert stored is not None and stored.published == "yes"
    [wire] = codec.decode_batch(bus._dispatch._items[0])
    assert (wire["id"], wire["offset"], wire["app"]) == (accepted["id"], accepted["offset"], APP_ID)


async def test_the_outbox_publishes_what_the_bus_missed_once_it_is_back(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    async with _client(store, BrokenBus()) as collect:
        accepted = [(await collect.post("/v1/messages", json=_send(f"u{n}"))).json()["messages"][0] for n in range(3)]
    healthy = MemoryBus()
    await healthy.start()
    sweeper = OutboxSweeper(store, Acceptor(store, healthy))
    assert await sweeper.sweep() == 0, "messages younger than MIN_AGE_S may still be on their way"
    # Negative: "older than a second from now", so a message stamped this very millisecond counts.
    with patch("herald.services.collect.outbox.MIN_AGE_S", -1.0):
        assert await sweeper.sweep() == 3
    queued = [wire["id"] for body in list(healthy._dispatch._items) for wire in codec.decode_batch(body)]
    assert queued == [a["id"] for a in accepted]
    assert await store.unpublished(now_ms() + 1, 10, time.time()) == []


def _outbox_gauge() -> float:
    return metrics.sample(metrics.exposition()[0].decode(), "herald_outbox_pending")


async def test_the_outbox_shows_its_backlog_while_the_bus_refuses_and_clears_it_once_published(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    async with _client(store, BrokenBus()) as collect:
        for n in range(2):
            assert (await collect.post("/v1/messages", json=_send(f"u{n}"))).status_code == 202
    healthy = MemoryBus()
    await healthy.start()
    with patch("herald.services.collect.outbox.MIN_AGE_S", -1.0):
        assert await OutboxSweeper(store, Acceptor(store, BrokenBus())).sweep() == 0
        assert _outbox_gauge() == 2  # what an alert on herald_outbox_pending sees
        assert await OutboxSweeper(store, Acceptor(store, healthy)).sweep() == 2
        assert _outbox_gauge() == 0
