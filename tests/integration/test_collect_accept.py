"""collect's accept path over HTTP: grouped writes, idempotency, and the shape of its answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core import codec
from herald.core.credentials import secret_hash
from herald.core.errors import Unavailable
from herald.core.model import App, Message
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.services.collect.app import create_app

KEY = "hk_test-key"
APP_ID = "app_00000000000000aa"


class FlakyStore(SqliteStore):
    """The standalone store; ``down`` makes every message insert fail as a lost server would."""

    down = False

    async def insert_messages(self, messages: Sequence[Message]) -> None:
        if self.down:
            raise Unavailable("store down", code="store_unavailable")
        await super().insert_messages(messages)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    impl = FlakyStore(str(tmp_path / "herald.db"))
    await impl.start()
    await impl.insert_app(App(APP_ID, "test", time.time()))
    await impl.replace_api_key(APP_ID, secret_hash(KEY))
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
async def bus() -> MemoryBus:
    impl = MemoryBus()
    await impl.start()
    return impl


@pytest.fixture
async def collect(store: FlakyStore, bus: MemoryBus) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings.from_env("standalone", {}), store, Acceptor(store, bus), MemoryDirectory(), bus)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collect", headers={"authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


def queued(bus: MemoryBus) -> list[dict]:
    return [wire for body in list(bus._dispatch._items) for wire in codec.decode_batch(body)]


def to_user(user: str, **extra: object) -> dict:
    return {"to": {"users": [user]}, "event": "e", "data": {"n": 1}, **extra}


async def test_concurrent_requests_each_get_their_own_offsets(collect: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(collect.post("/v1/messages", json=to_user("ann")) for _ in range(10)))
    assert {r.status_code for r in responses} == {202}
    offsets = sorted(r.json()["messages"][0]["offset"] for r in responses)
    assert offsets == list(range(1, 11))


async def test_concurrent_requests_while_the_store_is_down_all_answer_503_and_queue_nothing(
    collect: httpx.AsyncClient, store: FlakyStore, bus: MemoryBus
) -> None:
    store.down = True
    responses = await asyncio.gather(*(collect.post("/v1/messages", json=to_user(f"u{n}")) for n in range(5)))
    assert [r.status_code for r in responses] == [503] * 5
    assert {r.json()["error"]["code"] for r in responses} == {"store_unavailable"}
    assert queued(bus) == []


async def test_concurrent_retries_with_one_idempotency_key_store_one_message(
    collect: httpx.AsyncClient, bus: MemoryBus
) -> None:
    body = to_user("ann", idempotency_key="k-1")
    responses = await asyncio.gather(*(collect.post("/v1/messages", json=body) for _ in range(5)))
    accepted = [r.json()["messages"] for r in responses if r.status_code == 202]
    assert accepted and all(result == accepted[0] for result in accepted)
    assert {r.status_code for r in responses} <= {202, 409}
    again = await collect.post("/v1/messages", json=body)
    assert again.json()["messages"] == accepted[0]
    assert len(queued(bus)) == 1


async def test_a_single_send_answers_online_for_every_message(collect: httpx.AsyncClient) -> None:
    response = await collect.post("/v1/messages", json={"to": {"group": "ops"}, "event": "e", "data": None})
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    [accepted] = response.json()["messages"]
    assert accepted["online"] is None and accepted["offset"] == 1


async def test_batch_results_leave_out_online_where_it_is_unknown(collect: httpx.AsyncClient) -> None:
    items = [to_user("ann"), {"to": {"group": "ops"}, "event": "e"}, {"to": {}, "event": "e"}]
    response = await collect.post("/v1/messages/batch", json={"messages": items})
    assert response.status_code == 202
    user, group, refused = response.json()["results"]
    assert user["messages"][0]["online"] is False
    assert "online" not in group["messages"][0]
    assert set(refused) == {"error"} and refused["error"]["code"] == "invalid_recipients"


async def test_the_openapi_schema_still_documents_the_accept_answers(collect: httpx.AsyncClient) -> None:
    paths = (await collect.get("/openapi.json")).json()["paths"]
    single = paths["/v1/messages"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    batch = paths["/v1/messages/batch"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert single == {"$ref": "#/components/schemas/SendResult"}
    assert batch == {"$ref": "#/components/schemas/BatchResult"}
