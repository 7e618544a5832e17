"""The Python client's Subscriber against `herald dev`: an async iterator with the JS
client's semantics (resume, dedupe, ack once handled, fresh tokens on reconnect, stop on
4003, clean close, in-band token refresh). tests/clients/ drives the same logic against
a fake node, frame by frame."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from herald_client import Publisher, Revoked, Subscriber
from tests.support.procs import Standalone, start_standalone
from tests.support.servers import free_port, wait_for_port

# The in-band refresh test's tokens last TOKEN_TTL_S; it keeps the connection open for six
# of their lifetimes.
TOKEN_TTL_S = 3
REFRESH_TEST_S = 6.0 * TOKEN_TTL_S


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


async def test_a_clean_close_makes_what_was_handled_hold_for_the_next_connection(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    async with Subscriber([standalone.ws_url], await publisher.token(user)) as first:
        await publisher.send([user], "handled")
        await asyncio.wait_for(anext(aiter(first)), 10)
    await publisher.send([user], "next")

    async with Subscriber([standalone.ws_url], await publisher.token(user)) as second:  # no positions of its own
        message = await asyncio.wait_for(anext(aiter(second)), 10)

    assert message["event"] == "next" and second.duplicates == 0


async def test_after_herald_dev_restarts_it_resumes_and_what_was_sent_meanwhile_arrives_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    herald = start_standalone(tmp_path_factory.mktemp("restarted"))
    try:
        async with Publisher(herald.auth_url, herald.collect_url, herald.demo["api_key"]) as publisher:
            user = _user()

            async def token() -> str:
                return await publisher.token(user)

            subscriber = Subscriber([herald.ws_url], token, backoff_s=(0.5, 1.0))
            try:
                await subscriber.start()
            except TimeoutError:
                pytest.fail(f"no connection: {subscriber.closes} {subscriber.errors}\n{herald.process.log_tail()}")
            async with subscriber:
                stream = aiter(subscriber)
                await publisher.send([user], "before")
                before = await asyncio.wait_for(anext(stream), 10)

                assert await asyncio.to_thread(herald.process.stop) == 0
                await asyncio.to_thread(herald.process.start)  # same data directory, same ports
                for port in (herald.port_base + 2, herald.port_base + 4):
                    await asyncio.to_thread(wait_for_port, port)
                meanwhile = [(await publisher.send([user], "meanwhile", n))[0]["offset"] for n in range(3)]
                after = [await asyncio.wait_for(anext(stream), 15) for _ in meanwhile]
                with pytest.raises(TimeoutError):  # anything more would be a duplicate come late
                    await asyncio.wait_for(anext(stream), 0.5)

            assert before["event"] == "before"
            assert [(m["event"], m["offset"]) for m in after] == [("meanwhile", offset) for offset in meanwhile]
            assert subscriber.connects == 2
    finally:
        herald.process.stop()


async def test_a_three_second_token_stays_connected_through_in_band_refreshes_and_loses_nothing(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()

    async def token() -> str:
        return await publisher.token(user, ttl_s=TOKEN_TTL_S)

    received: list[int] = []
    sent: list[int] = []
    async with Subscriber([standalone.ws_url], token) as subscriber:

        async def read() -> None:
            async for message in subscriber:
                received.append(message["offset"])

        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < REFRESH_TEST_S:
            sent.append((await publisher.send([user], "tick"))[0]["offset"])
            await asyncio.sleep(1)
            if loop.time() - started > TOKEN_TTL_S + 1:  # one lifetime passed: fail now, not at the end
                assert subscriber.refreshes >= 1, f"no in-band refresh in one lifetime; closes: {subscriber.closes}"
        async with asyncio.timeout(5):
            while len(received) < len(sent):
                await asyncio.sleep(0.05)
        reader.cancel()

    assert subscriber.connects == 1 and subscriber.closes == []
    assert subscriber.refreshes >= REFRESH_TEST_S / TOKEN_TTL_S
    assert received == sent
