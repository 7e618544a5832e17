"""Events as signed webhooks from `herald dev`: presence, groups and acks reach the app's URL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from herald.core import codec
from herald.messaging import webhooks
from herald_client import Operator, Publisher
from tests.support.procs import Standalone
from tests.support.webhook_receiver import Received, Receiver
from tests.support.ws import next_frame, open_ws

WAIT_S = 10.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


async def _events(receiver: Receiver, count: int) -> list[Received]:
    async with asyncio.timeout(WAIT_S):
        while len(receiver.requests) < count:
            await asyncio.sleep(0.05)
    return list(receiver.requests)


async def test_presence_group_and_ack_events_arrive_signed_with_the_apps_secret(
    standalone: Standalone, receiver: Receiver
) -> None:
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app(f"hooked-{uuid.uuid4().hex[:6]}")
        settings = await operator.configure(created["app_id"], webhook_url=receiver.url)
    secret = settings["webhook_secret"]
    assert secret
    await asyncio.sleep(2.2)  # services cache app config for up to 2 s
    async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as publisher:
        await publisher.join("ops", "ann")
        token = await publisher.token("ann")
        first = await open_ws(standalone.ws_url, token)
        second = await open_ws(standalone.ws_url, token)  # a second tab: no second "online"
        await next_frame(first, "welcome")
        await next_frame(second, "welcome")
        [sent] = await publisher.send(["ann"], "hello")
        frame = await next_frame(first, "message")
        await first.send(codec.dumps_text({"type": "ack", "channel": frame["channel"], "offset": frame["offset"]}))
        await publisher.leave("ops", "ann")
        await first.close()
        await second.close()
        received = await _events(receiver, 5)
    kinds = [r.headers["x-herald-event"] for r in received]
    assert sorted(kinds) == sorted(["group.joined", "user.online", "message.acked", "group.left", "user.offline"])
    for request in received:
        assert webhooks.verify(secret, request.body, request.headers["x-herald-signature"])
        body = codec.loads(request.body)
        assert body["app_id"] == created["app_id"] and body["type"] == request.headers["x-herald-event"]
    acked = next(codec.loads(r.body) for r in received if r.headers["x-herald-event"] == "message.acked")
    assert (acked["user_id"], acked["channel"], acked["offset"]) == ("ann", sent["channel"], sent["offset"])
    await asyncio.sleep(0.5)
    assert [r.headers["x-herald-event"] for r in receiver.requests].count("user.online") == 1
