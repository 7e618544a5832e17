"""The push node's token check: handshakes in flight share introspection requests to auth.

auth is played by an ``httpx.MockTransport``; what matters is which requests the node
sends and which identities (or errors) each handshake gets back.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable

import httpx
import pytest

from herald.core.errors import Unavailable
from herald.services.push.introspect import (
    MAX_BATCH,
    MAX_LOW_BATCH,
    MAX_LOW_REQUESTS,
    MAX_LOW_WAITING,
    MAX_REQUESTS,
    Identity,
    TokenChecker,
)

Handler = Callable[[httpx.Request], httpx.Response]


def _answer(token: str) -> dict[str, object]:
    if token.startswith("good-"):
        user = token.removeprefix("good-")
        return {"active": True, "app_id": "app-1", "user_id": user, "exp": 2e9, "device": None, "publish": []}
    return {"active": False}


class FakeAuth:
    """Answers like auth and records every request's path and tokens."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/introspect/batch":
            self.requests.append((request.url.path, body["tokens"]))
            return httpx.Response(200, json={"results": [_answer(token) for token in body["tokens"]]})
        self.requests.append((request.url.path, [body["token"]]))
        return httpx.Response(200, json=_answer(body["token"]))


def _checker(handler: Handler) -> TokenChecker:
    return TokenChecker("http://auth", "service-secret", transport=httpx.MockTransport(handler))


async def test_handshakes_in_flight_share_one_request() -> None:
    auth = FakeAuth()
    checker = _checker(auth)

    found = await asyncio.gather(*(checker.identity(f"good-u{i}") for i in range(20)))

    assert [identity.user_id for identity in found if identity] == [f"u{i}" for i in range(20)]
    assert len(auth.requests) == 1
    await checker.close()


async def test_each_handshake_gets_its_own_tokens_answer() -> None:
    checker = _checker(FakeAuth())

    good, bad = await asyncio.gather(checker.identity("good-ann"), checker.identity("revoked"))

    assert good == Identity("app-1", "ann", 2e9, None, ())
    assert bad is None
    await checker.close()


async def test_the_same_token_twice_in_flight_is_asked_once() -> None:
    auth = FakeAuth()
    checker = _checker(auth)

    first, second = await asyncio.gather(checker.identity("good-ann"), checker.identity("good-ann"))

    assert first == second and first is not None
    assert auth.requests == [("/v1/introspect/batch", ["good-ann"])]
    await checker.close()


async def test_a_request_carries_at_most_max_batch_tokens() -> None:
    auth = FakeAuth()
    checker = _checker(auth)

    found = await asyncio.gather(*(checker.identity(f"good-u{i}") for i in range(MAX_BATCH * 2 + 1)))

    assert all(found)
    assert max(len(tokens) for _, tokens in auth.requests) <= MAX_BATCH
    assert sum(len(tokens) for _, tokens in auth.requests) == MAX_BATCH * 2 + 1
    await checker.close()


async def test_tokens_arriving_while_requests_are_out_wait_and_go_together() -> None:
    auth = FakeAuth()
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return auth(request)

    checker = TokenChecker("http://auth", "s", transport=httpx.MockTransport(slow))
    first = [asyncio.ensure_future(checker.identity(f"good-a{i}")) for i in range(MAX_REQUESTS)]
    for _ in range(MAX_REQUESTS):
        await asyncio.sleep(0)  # each on its own loop turn: one request each, all slots taken
    later = [asyncio.ensure_future(checker.identity(f"good-b{i}")) for i in range(10)]
    await asyncio.sleep(0)
    release.set()

    assert all(await asyncio.gather(*first, *later))
    assert ("/v1/introspect/batch", [f"good-b{i}" for i in range(10)]) in auth.requests
    await checker.close()


async def test_a_token_too_long_to_be_one_is_refused_without_asking() -> None:
    auth = FakeAuth()
    checker = _checker(auth)

    assert await checker.identity("x" * 513) is None
    assert await checker.identity("") is None
    assert auth.requests == []
    await checker.close()


async def test_auth_unreachable_makes_every_waiting_handshake_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    checker = _checker(down)

    outcomes = await asyncio.gather(checker.identity("good-a"), checker.identity("good-b"), return_exceptions=True)

    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    await checker.close()


async def test_a_hung_auth_answers_waiting_handshakes_unavailable_after_two_request_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("herald.services.push.introspect.TIMEOUT_S", 0.05)

    async def hung(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    checker = _checker(hung)

    outcomes = await asyncio.gather(checker.identity("good-a"), checker.identity("good-b"), return_exceptions=True)

    assert all(isinstance(outcome, Unavailable) and "in time" in outcome.message for outcome in outcomes)
    await checker.close()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, json={"error": {"code": "internal"}}),
        httpx.Response(200, json={"results": []}),  # fewer answers than tokens
        httpx.Response(200, json={"results": [{"active": True}]}),  # active without an identity
        httpx.Response(200, content=b"not json"),
    ],
)
async def test_an_answer_auth_should_not_give_never_lets_a_token_in(response: httpx.Response) -> None:
    checker = _checker(lambda request: response)

    with pytest.raises(Unavailable):
        await checker.identity("good-a")
    await checker.close()


async def test_an_auth_without_the_batch_path_is_asked_one_token_at_a_time() -> None:
    auth = FakeAuth()

    def older(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/introspect/batch":
            return httpx.Response(404, json={"error": {"code": "not_found"}})
        return auth(request)

    checker = _checker(older)

    found = await asyncio.gather(checker.identity("good-a"), checker.identity("bad"))

    assert [identity.user_id if identity else None for identity in found] == ["a", None]
    assert sorted(auth.requests) == [("/v1/introspect", ["bad"]), ("/v1/introspect", ["good-a"])]
    await checker.close()


async def test_suspect_tokens_take_at_most_their_lane_and_others_pass_them() -> None:
    auth = FakeAuth()
    release = asyncio.Event()
    low_in_flight: list[int] = []
    holding = 0

    async def hanging_for_made_up(request: httpx.Request) -> httpx.Response:
        nonlocal holding
        if any(not token.startswith("good-") for token in json.loads(request.content)["tokens"]):
            holding += 1
            low_in_flight.append(holding)
            await release.wait()
            holding -= 1
        return auth(request)

    checker = TokenChecker("http://auth", "s", transport=httpx.MockTransport(hanging_for_made_up))
    flood = [asyncio.ensure_future(checker.identity(f"made-up-{i}", low_priority=True)) for i in range(100)]
    await asyncio.sleep(0.05)
    real = await asyncio.wait_for(checker.identity("good-ann"), 1.0)

    assert real is not None and real.user_id == "ann"
    assert not any(future.done() for future in flood)
    release.set()
    assert not any(await asyncio.gather(*flood))
    assert max(low_in_flight) == MAX_LOW_REQUESTS
    await checker.close()


async def test_past_the_low_lanes_bound_a_suspect_token_is_answered_try_later_at_once() -> None:
    release = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return FakeAuth()(request)

    checker = TokenChecker("http://auth", "s", transport=httpx.MockTransport(hanging))
    # The lane to its bound, one request's worth out (hanging), then as many again.
    waiting = []
    for start, count in ((0, MAX_LOW_WAITING), (MAX_LOW_WAITING, MAX_LOW_BATCH)):
        waiting += [
            asyncio.ensure_future(checker.identity(f"made-up-{i}", low_priority=True))
            for i in range(start, start + count)
        ]
        await asyncio.sleep(0.05)
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(checker.identity("made-up-one-more", low_priority=True), 0.5)
    assert refused.value.code == "try_later"
    for future in waiting:
        future.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    release.set()
    await checker.close()


async def test_an_introspection_leaves_no_cyclic_garbage() -> None:
    # httpx's response and its stream point at each other: a push node asks once per
    # connect, and its rare full collections let that garbage pile up (issue 18).
    checker = _checker(FakeAuth())
    await checker.identity("good-warm")
    gc.collect()
    gc.disable()
    try:
        for n in range(20):
            assert await checker.identity(f"good-{n}") is not None
        left = gc.collect()
    finally:
        gc.enable()
        await checker.close()

    assert left == 0


async def test_an_unexpected_failure_answers_every_waiting_handshake_at_once() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the client")

    checker = _checker(broken)

    started = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable, match="introspection failed on this node"):
        await checker.identity("good-ann")

    assert asyncio.get_running_loop().time() - started < 1.0  # not the 6 s wait for an answer
    await checker.close()


async def test_the_token_check_goes_to_a_real_auth_over_the_lean_link() -> None:
    seen: list[bytes] = []

    async def auth(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = json.loads(await reader.readexactly(length))
        seen.append(head.split(b"\r\n")[0])
        answer = json.dumps({"results": [_answer(token) for token in body["tokens"]]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(auth, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checker = TokenChecker(f"http://127.0.0.1:{port}", "service-secret")

    found = await checker.identity("good-ann")

    assert found == Identity("app-1", "ann", 2e9, None, ())
    assert seen == [b"POST /v1/introspect/batch HTTP/1.1"]
    await checker.close()
    server.close()
