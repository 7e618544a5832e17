"""The Python SDK's Subscriber: an async iterator with the JS client's semantics (resume,
dedupe, ack once handled, fresh tokens on reconnect, stop on 4003)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from herald.client import Publisher, Revoked, Subscriber
from tests.support.procs import Standalone
from tests.support.servers import free_port


def _user() -> str:
    return f"sub-{uuid.uuid4().hex[:8]}"


async def _status(publisher: Publisher, message_id: str, wanted: str) -> str:
    """Receipts travel in batches about once a second; wait (bounded) for the status."""
    status = ""
    for _ in range(50):
        status = (await publisher.message(message_id))["status"]
        if status == wanted:
            break
        await asyncio.sleep(0.1)
    return status


async def test_messages_come_in_offset_order_and_each_is_acked_once_the_app_asks_for_the_next(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    async with Subscriber([standalone.ws_url], await publisher.token(user)) as subscriber:
        sent = [(await publisher.send([user], "n", n))[0] for n in range(3)]
        stream = aiter(subscriber)
        first = await anext(stream)
        assert await _status(publisher, first["id"], "acked") == "delivered"  # handed out, not yet handled

        second = await anext(stream)  # asking for more says the first was handled

        assert await _status(publisher, first["id"], "acked") == "acked"
        assert [first["offset"], second["offset"]] == [sent[0]["offset"], sent[1]["offset"]]


async def test_a_token_function_is_asked_again_for_each_connection_attempt(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    asked: list[str] = []

    async def token() -> str:
        asked.append(await publisher.token(user, ttl_s=60))
        return asked[-1]

    nobody = f"ws://127.0.0.1:{free_port()}/ws"  # the first attempt fails: nothing listens there
    async with Subscriber([nobody, standalone.ws_url], token, backoff_s=(0.01, 0.05)) as subscriber:
        await publisher.send([user], "after-retry")
        message = await asyncio.wait_for(anext(aiter(subscriber)), 10)

    assert message["event"] == "after-retry"
    assert len(asked) == 2 and asked[0] != asked[1]


async def test_a_revoked_token_ends_the_iteration_instead_of_reconnecting(
    standalone: Standalone, publisher: Publisher
) -> None:
    token = await publisher.token(_user())
    subscriber = Subscriber([standalone.ws_url], token, backoff_s=(0.01, 0.05))
    async with subscriber:
        await publisher.revoke(token)
        with pytest.raises(Revoked):
            await asyncio.wait_for(anext(aiter(subscriber)), 10)

    assert subscriber.closes == [4003] and subscriber.connects == 1


async def test_a_kick_ends_the_iteration_with_revoked_after_what_was_already_received(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    received: list[dict[str, Any]] = []
    async with Subscriber([standalone.ws_url], await publisher.token(user)) as subscriber:
        await publisher.send([user], "before-kick")
        await asyncio.sleep(0.5)
        await publisher.kick(user)

        with pytest.raises(Revoked):
            async with asyncio.timeout(10):
                async for message in subscriber:
                    received.append(message)

    assert [m["event"] for m in received] == ["before-kick"]
