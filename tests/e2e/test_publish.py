"""Clients publishing from their sockets in `herald dev`: permissions, membership, rate, hook."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from herald.core import codec
from herald.messaging import webhooks
from herald_client import Operator, Publisher
from tests.support.procs import Standalone
from tests.support.ws import next_frame, no_message_within, open_ws


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Frames read while waiting for a reply, per socket: replies and messages come in any order.
_early: dict[int, list[dict]] = {}


async def _publish(ws: ClientConnection, seq: str, channel: str, data: Any = None, event: str = "chat") -> dict:
    await ws.send(codec.dumps_text({"type": "publish", "seq": seq, "channel": channel, "event": event, "data": data}))
    async with asyncio.timeout(10):
        while True:
            frame = codec.loads(await ws.recv())
            if frame.get("type") == "reply":
                assert frame["seq"] == seq
                return frame
            _early.setdefault(id(ws), []).append(frame)


async def _message(ws: ClientConnection) -> dict:
    """The next message frame, including one that came before the reply to a publish."""
    early = _early.get(id(ws), [])
    for index, frame in enumerate(early):
        if frame.get("type") == "message":
            return early.pop(index)
    return await next_frame(ws, "message")


async def _connect(standalone: Standalone, publisher: Publisher, user: str, publish: list[str]) -> ClientConnection:
    ws = await open_ws(standalone.ws_url, await publisher.token(user, publish=publish))
    await next_frame(ws, "welcome")
    return ws


async def test_without_a_pattern_in_the_token_a_publish_is_refused(
    standalone: Standalone, publisher: Publisher
) -> None:
    ws = await _connect(standalone, publisher, _name("ann"), [])
    reply = await _publish(ws, "1", "user:bob")
    assert reply["error"]["code"] == "forbidden_channel"
    await ws.close()


async def test_a_permitted_publish_to_a_user_is_stored_and_delivered_with_its_sender(
    standalone: Standalone, publisher: Publisher
) -> None:
    ann, bob = _name("ann"), _name("bob")
    ws_ann = await _connect(standalone, publisher, ann, ["user:*"])
    ws_bob = await _connect(standalone, publisher, bob, [])
    reply = await _publish(ws_ann, "17", f"user:{bob}", {"text": "hi bob"})
    assert (reply["channel"], reply["offset"]) == (f"user:{bob}", 1) and reply["id"]
    frame = await _message(ws_bob)
    assert frame["id"] == reply["id"] and frame["data"] == {"text": "hi bob"}
    assert frame["from"]["user_id"] == ann
    stored = await publisher.message(reply["id"])
    assert stored["from"]["user_id"] == ann
    await ws_ann.close()
    await ws_bob.close()


async def test_a_group_publish_needs_membership_and_then_reaches_every_member(
    standalone: Standalone, publisher: Publisher
) -> None:
    room, ann, bob = _name("room"), _name("ann"), _name("bob")
    ws_ann = await _connect(standalone, publisher, ann, ["group:room-*"])
    assert (await _publish(ws_ann, "1", f"group:{room}"))["error"]["code"] == "not_a_member"
    await publisher.join(room, ann)
    await publisher.join(room, bob)
    ws_bob = await _connect(standalone, publisher, bob, [])
    reply = await _publish(ws_ann, "2", f"group:{room}", {"text": "hello room"})
    assert "error" not in reply
    for ws in (ws_ann, ws_bob):
        frame = await _message(ws)
        assert (frame["channel"], frame["offset"], frame["from"]["user_id"]) == (f"group:{room}", reply["offset"], ann)
    await ws_ann.close()
    await ws_bob.close()


async def test_a_pattern_for_other_groups_does_not_open_this_one(standalone: Standalone, publisher: Publisher) -> None:
    ops, ann = _name("ops"), _name("ann")
    await publisher.join(ops, ann)
    ws = await _connect(standalone, publisher, ann, ["group:room-*"])
    assert (await _publish(ws, "1", f"group:{ops}"))["error"]["code"] == "forbidden_channel"
    await ws.close()


async def test_a_publish_over_the_payload_limit_gets_an_error_reply(
    standalone: Standalone, publisher: Publisher
) -> None:
    ws = await _connect(standalone, publisher, _name("ann"), ["user:*"])
    await ws.send(
        codec.dumps_text({"type": "publish", "seq": "big", "channel": "user:x", "event": "e", "data": "x" * 70_000})
    )
    # The frame itself is over the 64 KiB frame limit: the node closes with 1009.
    with contextlib.suppress(Exception):
        await next_frame(ws, timeout_s=2)
    assert ws.close_code == 1009
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app(_name("small"))
        await operator.configure(created["app_id"], limits={"max_payload": 100})
    await asyncio.sleep(2.2)  # config is cached for up to 2 s
    async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as own:
        ws = await _connect(standalone, own, "ann", ["user:*"])
        reply = await _publish(ws, "b2", "user:x", "x" * 200)
        assert reply["error"]["code"] == "payload_too_large"
        await ws.close()


async def test_publishing_faster_than_the_frame_rate_gets_rate_limited_replies(
    standalone: Standalone, publisher: Publisher
) -> None:
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app(_name("rate"))
        await operator.configure(created["app_id"], limits={"frames_per_s": 2})
    await asyncio.sleep(2.2)  # config is cached for up to 2 s
    async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as own:
        ws = await _connect(standalone, own, "ann", ["user:*"])
        for n in range(10):
            await ws.send(codec.dumps_text({"type": "publish", "seq": str(n), "channel": "user:bob", "event": "e"}))
        replies = [await next_frame(ws, "reply") for _ in range(10)]
        codes = [r.get("error", {}).get("code") for r in replies]
        assert codes.count("rate_limited") >= 5, codes
        assert sorted(r["seq"] for r in replies) == sorted(str(n) for n in range(10))
        await ws.close()


async def test_a_frame_that_is_not_json_gets_an_error_frame_and_the_connection_stays(
    standalone: Standalone, publisher: Publisher
) -> None:
    ws = await _connect(standalone, publisher, _name("ann"), ["user:*"])
    await ws.send("{not json")
    assert (await next_frame(ws, "error"))["code"] == "invalid_json"
    assert "error" not in await _publish(ws, "ok", "user:bob")
    await ws.close()


class Hook:
    """An app's publish hook on the loopback, answering with ``decide(candidate)``."""

    def __init__(self, decide: Callable[[dict], dict]) -> None:
        self.decide = decide
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/publish-hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                answer = codec.dumps(self.decide(codec.loads(body)))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(answer)).encode()
                    + b"\r\nconnection: close\r\n\r\n"
                    + answer
                )
                await writer.drain()
        finally:
            writer.close()


def _moderate(candidate: dict) -> dict:
    text = (candidate.get("data") or {}).get("text", "")
    if "spam" in text:
        return {"allow": False, "reason": "no spam here"}
    if "darn" in text:
        return {"allow": True, "data": {"text": text.replace("darn", "d**n")}}
    return {"allow": True}


@pytest.fixture
async def hooked(standalone: Standalone) -> AsyncIterator[tuple[Publisher, Hook, str]]:
    hook = Hook(_moderate)
    await hook.start()
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app(_name("hooked"))
        settings = await operator.configure(created["app_id"], publish_hook_url=hook.url)
    await asyncio.sleep(2.2)  # config is cached for up to 2 s
    async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as own:
        yield own, hook, settings["webhook_secret"]
    await hook.close()


async def test_the_publish_hook_approves_rewrites_and_refuses(
    standalone: Standalone, hooked: tuple[Publisher, Hook, str]
) -> None:
    own, hook, secret = hooked
    ws_ann = await _connect(standalone, own, "ann", ["user:*"])
    ws_bob = await _connect(standalone, own, "bob", [])
    approved = await _publish(ws_ann, "1", "user:bob", {"text": "hello"})
    assert (await _message(ws_bob))["data"] == {"text": "hello"} and "error" not in approved
    rewritten = await _publish(ws_ann, "2", "user:bob", {"text": "darn it"})
    assert (await _message(ws_bob))["data"] == {"text": "d**n it"} and "error" not in rewritten
    refused = await _publish(ws_ann, "3", "user:bob", {"text": "buy spam"})
    assert refused["error"] == {"code": "refused_by_hook", "message": "no spam here"}
    assert await no_message_within(ws_bob, 0.5)
    headers, body = hook.requests[0]
    assert webhooks.verify(secret, body, headers["x-herald-signature"])
    assert codec.loads(body)["user_id"] == "ann"
    await ws_ann.close()
    await ws_bob.close()
