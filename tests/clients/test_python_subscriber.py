"""The Python Subscriber against a fake push node that speaks exactly the protocol's frames:
how it authenticates, refreshes its token in band, reconnects on 4001, stops on 4003 and
closes cleanly. No Herald runs here; tests/e2e/test_subscriber.py covers the real server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from herald_client import Revoked, Subscriber, TokenExpired
from tests.clients.fake_node import FakeNode, Peer


class Tokens:
    """A token function that hands out a new token on each call and remembers them."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self._numbers = itertools.count(1)

    def __call__(self) -> str:
        self.issued.append(f"ht_token{next(self._numbers)}")
        return self.issued[-1]

    async def asynchronous(self) -> str:
        await asyncio.sleep(0)
        return self()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def _connected(node: FakeNode) -> Peer:
    peer = await node.accepted()
    await peer.expect("resume")
    return peer


async def test_the_token_travels_in_the_authorization_header_never_in_the_url() -> None:
    async with FakeNode() as node, Subscriber(node.url, "ht_secret"):
        peer = await _connected(node)

    assert peer.path == "/ws"
    assert peer.authorization == "Bearer ht_secret"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_expiring_is_answered_with_a_fresh_token_on_the_same_connection(kind: str) -> None:
    tokens = Tokens()
    source: Callable[[], str | Awaitable[str]] = tokens if kind == "sync" else tokens.asynchronous
    async with FakeNode() as node, Subscriber(node.url, source) as subscriber:
        peer = await _connected(node)
        await peer.send({"type": "expiring", "in_s": 30})
        refresh = await peer.expect("refresh")
        await peer.send({"type": "refreshed", "exp": 1_900_000_000})
        await _until(lambda: subscriber.refreshes == 1)

    assert refresh["token"] == tokens.issued[1] != tokens.issued[0]
    assert subscriber.connects == 1 and subscriber.expires_at == 1_900_000_000


async def test_a_refused_refresh_is_tried_again_on_the_same_connection() -> None:
    tokens = Tokens()
    async with FakeNode() as node, Subscriber(node.url, tokens) as subscriber:
        peer = await _connected(node)
        await peer.send({"type": "expiring", "in_s": 5})
        await peer.expect("refresh")
        await peer.send({"type": "error", "code": "auth_unavailable", "message": "auth did not answer"})
        retried = await peer.expect("refresh")
        await peer.send({"type": "refreshed", "exp": 1_900_000_000})
        await _until(lambda: subscriber.refreshes == 1)

    assert retried["token"] == tokens.issued[-1] and len(tokens.issued) == 3
    assert subscriber.connects == 1 and [e["code"] for e in subscriber.errors] == ["auth_unavailable"]


async def test_a_fixed_token_does_not_refresh_and_a_4001_then_ends_with_token_expired() -> None:
    async with FakeNode() as node, Subscriber(node.url, "ht_fixed") as subscriber:
        peer = await _connected(node)
        await peer.send({"type": "expiring", "in_s": 1})
        await peer.close(4001, "token expired")
        with pytest.raises(TokenExpired):
            await asyncio.wait_for(anext(aiter(subscriber)), 5)

    assert peer.frames.empty(), "nothing to refresh with: no refresh frame"
    assert subscriber.closes == [4001] and subscriber.connects == 1


async def test_a_4001_close_reconnects_at_once_with_a_fresh_token_and_resumes_where_it_was() -> None:
    tokens = Tokens()
    async with FakeNode() as node, Subscriber(node.url, tokens, backoff_s=(5.0, 5.0)) as subscriber:
        first = await _connected(node)
        await first.message("user:alice", 7)
        assert (await anext(aiter(subscriber)))["offset"] == 7
        await first.close(4001, "token expired")

        second = await node.accepted()  # the backoff is 5 s: only a 4001 comes back at once
        resume = await second.expect("resume")

    assert resume["positions"] == {"user:alice": 7}
    assert second.authorization == f"Bearer {tokens.issued[1]}" != first.authorization
    assert subscriber.closes == [4001] and subscriber.connects == 2


async def test_a_4003_close_ends_the_iteration_with_revoked_without_reconnecting() -> None:
    tokens = Tokens()
    async with FakeNode() as node, Subscriber(node.url, tokens, backoff_s=(0.01, 0.01)) as subscriber:
        peer = await _connected(node)
        await peer.close(4003, "token revoked")
        with pytest.raises(Revoked, match="token revoked"):
            await asyncio.wait_for(anext(aiter(subscriber)), 5)

    assert subscriber.connects == 1 and len(tokens.issued) == 1


async def test_a_clean_close_acks_what_was_handled_then_waits_for_the_servers_close_answer() -> None:
    async with FakeNode() as node:
        subscriber = await Subscriber(node.url, "ht_t").start()
        peer = await _connected(node)
        await peer.message("user:alice", 3)
        await anext(aiter(subscriber))
        assert peer.ws.transport is not None
        peer.ws.transport.pause_reading()  # the server is busy storing acks: no close answer yet

        closing = asyncio.create_task(subscriber.close())
        await asyncio.sleep(0.3)
        still_waiting = not closing.done()
        peer.ws.transport.resume_reading()
        await asyncio.wait_for(closing, 5)

    assert still_waiting
    assert await peer.expect("ack") == {"type": "ack", "channel": "user:alice", "offset": 3}
    assert peer.close_code_received == 1000
    assert subscriber.closes == [], "closing on purpose is not a lost connection"
