"""The delivery guarantees as scenarios, run against `herald dev` (tests/e2e) and against a
cluster of processes with two push nodes (tests/cluster): the same words, both modes.

Each was a hole once (a late member read the group's past; a connection outlived its
token; an acked message came back after a clean close and a reconnect to the other
node; an ack beyond what was sent was stored; a revoke raced a handshake and lost).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from herald.core import codec
from herald_client import Publisher
from tests.support.ws import close_code, collect_messages, next_frame, no_message_within, open_ws

QUIET_S = 1.0


@dataclass
class Target:
    publisher: Publisher
    ws_urls: list[str]  # one per push node

    def node(self, index: int) -> str:
        return self.ws_urls[index % len(self.ws_urls)]


def name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


async def send_frame(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(codec.dumps_text(frame))


async def connect(target: Target, node: int, user: str, resume: dict[str, int] | None = None) -> ClientConnection:
    ws = await open_ws(target.node(node), await target.publisher.token(user), how="subprotocol")
    await next_frame(ws, "welcome")
    if resume is not None:
        await send_frame(ws, {"type": "resume", "positions": resume})
    return ws


async def a_late_member_does_not_read_the_groups_past(target: Target) -> None:
    group, mallory = name("g"), name("mallory")
    for n in range(3):
        await target.publisher.send_to_group(group, "before", n)
    membership = await target.publisher.join(group, mallory)
    assert membership["joined_after"] == 3
    ws = await connect(target, 0, mallory, resume={f"group:{group}": 0})
    try:
        assert await no_message_within(ws, QUIET_S), "a member who joined after offset 3 got the group's past"
        sent = await target.publisher.send_to_group(group, "after", 4)
        [got] = await collect_messages(ws, 1)
        assert got["offset"] == sent["offset"] == 4
    finally:
        await ws.close()


async def a_rejoin_skips_what_was_sent_while_out(target: Target) -> None:
    group, bob = name("g"), name("bob")
    channel = f"group:{group}"
    await target.publisher.join(group, bob)
    await target.publisher.send_to_group(group, "in", 1)
    await target.publisher.leave(group, bob)
    await target.publisher.send_to_group(group, "out", 2)
    await target.publisher.send_to_group(group, "out", 3)
    assert (await target.publisher.join(group, bob))["joined_after"] == 3
    ws = await connect(target, 1, bob, resume={channel: 1})
    try:
        assert await no_message_within(ws, QUIET_S), "messages sent while bob was out reached him"
        await target.publisher.send_to_group(group, "in-again", 4)
        assert [f["offset"] for f in await collect_messages(ws, 1)] == [4]
    finally:
        await ws.close()


async def a_connection_does_not_outlive_its_token(target: Target) -> None:
    user = name("ann")
    ws = await open_ws(target.node(0), await target.publisher.token(user, ttl_s=2), how="subprotocol")
    await next_frame(ws, "welcome")
    expiring = await next_frame(ws, "expiring", timeout_s=3)
    assert 0 < expiring["in_s"] <= 1.5
    assert await close_code(ws, 4) == 4001


async def an_acked_message_does_not_come_back_after_a_clean_close(target: Target, tries: int = 5) -> None:
    user = name("ann")
    inbox = f"user:{user}"
    for attempt in range(tries):
        [sent] = await target.publisher.send([user], "order", attempt)
        ws = await connect(target, 0, user)
        [got] = await collect_messages(ws, 1)
        assert got["offset"] == sent["offset"]
        await send_frame(ws, {"type": "ack", "channel": inbox, "offset": got["offset"]})
        await ws.close()  # a clean close: the node stores the ack before answering
        again = await open_ws(target.node(1), await target.publisher.token(user), how="subprotocol")
        try:
            welcome = await next_frame(again, "welcome")
            assert welcome["positions"][inbox] == got["offset"], f"try {attempt + 1}: {welcome['positions']}"
            assert await no_message_within(again, 0.5), f"try {attempt + 1}: the acked message came back"
        finally:
            await again.close()


async def an_ack_beyond_what_was_sent_is_clamped(target: Target) -> None:
    group, ann = name("x"), name("ann")
    channel = f"group:{group}"
    await target.publisher.join(group, ann)
    ws = await connect(target, 0, ann)
    first = await target.publisher.send_to_group(group, "one", 1)
    [got] = await collect_messages(ws, 1)
    await send_frame(ws, {"type": "ack", "channel": channel, "offset": 2**63 - 1})
    error = await next_frame(ws, "error")
    assert error["code"] == "ack_beyond_sent"
    await ws.close()
    later = await target.publisher.send_to_group(group, "two", 2)
    ws = await open_ws(target.node(1), await target.publisher.token(ann), how="subprotocol")
    try:
        welcome = await next_frame(ws, "welcome")
        assert welcome["positions"][channel] == got["offset"] == first["offset"]
        [next_one] = await collect_messages(ws, 1)
        assert next_one["offset"] == later["offset"]
    finally:
        await ws.close()


async def a_revoke_closes_handshakes_in_flight(target: Target, rounds: int = 10, handshakes: int = 40) -> None:
    """Bursts of handshakes with one token while the token is revoked among them, the
    revoke a little later each round: every handshake that got through is closed with
    4003, none stays open, and the token connects no more."""
    for round_ in range(rounds):
        await _revoke_during_a_burst(target, round_, handshakes, delay_s=round_ * 0.01)


async def _revoke_during_a_burst(target: Target, round_: int, handshakes: int, delay_s: float) -> None:
    token = await target.publisher.token(name("eve"))

    async def handshake(index: int) -> ClientConnection | None:
        try:
            return await open_ws(target.node(index), token, how="subprotocol")
        except InvalidStatus:
            return None

    async def revoke() -> None:
        await asyncio.sleep(delay_s)
        await target.publisher.revoke(token)

    *results, _ = await asyncio.gather(*(handshake(index) for index in range(handshakes)), revoke())
    opened = [ws for ws in results if ws is not None]
    codes = await asyncio.gather(*(close_code(ws, 5) for ws in opened))
    stayed = codes.count(None)
    assert stayed == 0, f"round {round_ + 1}: {stayed} of {len(opened)} connections outlived the revoke"
    assert all(code == 4003 for code in codes), codes
    try:
        await open_ws(target.node(0), token, how="subprotocol")
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
    else:
        raise AssertionError("a revoked token still connects")
