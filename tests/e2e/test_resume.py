"""Resume: the backlog after a client's position, then live messages, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from herald.core import codec
from herald.services.push.sequencing import HOLE_WAIT_S
from herald_client import HeraldAPIError, Publisher
from tests.support.procs import Standalone
from tests.support.ws import collect_messages, next_frame, no_message_within, open_ws


def _user() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def _resume(user: str, offset: int) -> str:
    return codec.dumps_text({"type": "resume", "positions": {f"user:{user}": offset}})


async def test_an_offline_user_gets_what_was_sent_while_away_on_connect(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    for n in range(5):
        await publisher.send([user], "while.away", n)
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    got = await collect_messages(ws, 5)
    assert [(f["offset"], f["data"]) for f in got] == [(n + 1, n) for n in range(5)]
    assert await no_message_within(ws, 0.3)
    await ws.close()


async def test_a_reconnecting_client_gets_exactly_what_follows_its_position(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    token = await publisher.token(user)
    ws = await open_ws(standalone.ws_url, token)
    await ws.send(_resume(user, 0))
    for n in range(3):
        await publisher.send([user], "n", n)
    assert [f["offset"] for f in await collect_messages(ws, 3)] == [1, 2, 3]
    await ws.close()
    for n in range(3, 6):
        await publisher.send([user], "n", n)
    again = await open_ws(standalone.ws_url, token)
    await again.send(_resume(user, 3))
    got = await collect_messages(again, 3)
    assert [(f["offset"], f["data"]) for f in got] == [(4, 3), (5, 4), (6, 5)]
    assert await no_message_within(again, 0.3)
    await again.close()


async def test_without_resume_the_backlog_starts_after_the_acked_position(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    for n in range(4):
        await publisher.send([user], "n", n)
    token = await publisher.token(user)
    ws = await open_ws(standalone.ws_url, token)
    await collect_messages(ws, 4)
    await ws.send(codec.dumps_text({"type": "ack", "channel": f"user:{user}", "offset": 2}))
    await asyncio.sleep(1.5)  # acks are persisted about once a second
    await ws.close()
    again = await open_ws(standalone.ws_url, token)
    welcome = await next_frame(again, "welcome")
    assert welcome["positions"][f"user:{user}"] == 2
    assert [f["offset"] for f in await collect_messages(again, 2)] == [3, 4]
    assert await no_message_within(again, 0.3)
    await again.close()


async def test_messages_sent_during_the_backlog_read_arrive_once_and_in_order(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    backlog = await publisher.send_batch([{"to": {"users": [user]}, "event": "old", "data": n} for n in range(700)])
    assert all("messages" in item for item in backlog)
    ws = await open_ws(standalone.ws_url, await publisher.token(user))

    async def live() -> None:
        for n in range(700, 800):
            await publisher.send([user], "new", n)

    sender = asyncio.create_task(live())
    await ws.send(_resume(user, 0))
    got = await collect_messages(ws, 800, timeout_s=30)
    await sender
    offsets = [f["offset"] for f in got]
    assert offsets == list(range(1, 801)), f"received {len(offsets)}, first gaps/dups near {_first_anomaly(offsets)}"
    assert [f["data"] for f in got] == list(range(800))
    assert await no_message_within(ws, 0.3)
    await ws.close()


async def test_a_resume_mid_session_replays_from_the_given_position(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    await ws.send(_resume(user, 0))
    for n in range(3):
        await publisher.send([user], "n", n)
    assert len(await collect_messages(ws, 3)) == 3
    await ws.send(_resume(user, 1))
    assert [f["offset"] for f in await collect_messages(ws, 2)] == [2, 3]
    await ws.close()


async def test_resuming_another_users_channel_is_refused(standalone: Standalone, publisher: Publisher) -> None:
    ws = await open_ws(standalone.ws_url, await publisher.token(_user()))
    await ws.send(_resume("someone-else", 0))
    assert (await next_frame(ws, "error"))["code"] == "forbidden_channel"
    await ws.close()


def _first_anomaly(offsets: list[int]) -> int | None:
    for index, offset in enumerate(offsets):
        if offset != index + 1:
            return index
    return None


async def test_an_expired_message_is_neither_replayed_nor_listed(standalone: Standalone, publisher: Publisher) -> None:
    user = _user()
    [short] = await publisher.send([user], "short", ttl_s=1)
    [kept] = await publisher.send([user], "kept")
    await asyncio.sleep(1.3)
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    await ws.send(_resume(user, 0))
    # The expired offset looks like a write still in flight until HOLE_WAIT_S has passed.
    got = await collect_messages(ws, 2, timeout_s=HOLE_WAIT_S + 2)
    assert [f["id"] for f in got] == [kept["id"]]
    history = await publisher.history(f"user:{user}")
    assert [m["id"] for m in history["messages"]] == [kept["id"]]
    with pytest.raises(HeraldAPIError) as info:
        await publisher.message(short["id"])
    assert info.value.status == 404
    await ws.close()
