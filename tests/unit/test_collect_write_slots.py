"""collect keeps as many group commits out at once as its store writes at once: one on the
standalone store's single writer thread, two on a server that writes concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httpx

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.credentials import secret_hash
from herald.core.model import App
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.ops.runtime import served
from herald.services.collect.app import create_app

KEY = "hk_write-slots-test-key"
APP_ID = "app_00000000000000c3"
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
# Long beside the group commit's 1 ms window: a second slot would have been taken by then.
SETTLE_S = 0.05


class GatedStore(SqliteStore):
    """The standalone store, its offset allocations recorded and held until ``gate`` opens."""

    def __init__(self, concurrent_writes: int) -> None:
        super().__init__(":memory:")
        self.concurrent_writes = concurrent_writes
        self.allocations: list[list[str]] = []
        self.gate = asyncio.Event()

    async def allocate_offsets(self, app_id: str, counts: Mapping[str, int]) -> dict[str, int]:
        self.allocations.append(sorted(counts))
        await self.gate.wait()
        return await super().allocate_offsets(app_id, counts)


async def _send_three(store: GatedStore) -> list[list[str]]:
    """Send to a, then b and c while a's group is held at the store; the allocations made
    before the store lets go, then all of them."""
    settings = Settings.from_env("standalone", {"HERALD_ADMIN_TOKEN": "a" * 40, "HERALD_SERVICE_TOKEN": "s" * 40})
    await store.start()
    try:
        await store.insert_app(App(APP_ID, "write-slots", time.time()))
        await store.replace_api_key(APP_ID, secret_hash(KEY))
        bus = MemoryBus()
        await bus.start()
        app = create_app(settings, store, Acceptor(store, bus), MemoryDirectory(), bus)
        transport = httpx.ASGITransport(app=served(app, settings.body_limit))
        async with httpx.AsyncClient(transport=transport, base_url="http://collect") as client:

            def send(user: str) -> asyncio.Task[httpx.Response]:
                body = {"to": {"users": [user]}, "event": "e", "data": 1}
                return asyncio.ensure_future(client.post("/v1/messages", json=body, headers=HEADERS))

            first = send("a")
            while not store.allocations:
                await asyncio.sleep(0.001)
            later = [send("b"), send("c")]
            await asyncio.sleep(SETTLE_S)
            held = list(store.allocations)
            store.gate.set()
            answers = await asyncio.gather(first, *later)
        assert [answer.status_code for answer in answers] == [202, 202, 202]
        return held
    finally:
        await store.close()


async def test_on_the_standalone_store_the_next_group_gathers_until_the_first_is_written() -> None:
    store = GatedStore(SqliteStore.concurrent_writes)
    held = await _send_three(store)
    assert held == [["user:a"]]
    assert store.allocations == [["user:a"], ["user:b", "user:c"]]


async def test_on_a_store_writing_concurrently_a_second_group_goes_out_beside_the_first() -> None:
    held = await _send_three(GatedStore(concurrent_writes=2))
    assert len(held) == 2
    assert held[0] == ["user:a"]
