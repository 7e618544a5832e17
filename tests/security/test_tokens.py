"""Made-up connect tokens: refused on the node, cheaply, while real users get in at once.

Before the token screen every made-up token cost a request to auth (and a store read
there). Now a token not shaped like one auth issues is refused without asking auth, a
well-shaped one auth refused is remembered, and auth's requests are counted on the
standalone's /metrics (auth and push share the process) to prove it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest

from herald.core.credentials import new_connect_token
from herald_client import Publisher
from tests.support.edges import metric, running
from tests.support.procs import Standalone
from tests.support.rawws import open_tcp, read_head, upgrade_request
from tests.support.ws import next_frame, open_ws


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with running(tmp_path_factory.mktemp("tokens")) as herald:
        yield herald


async def _auth_requests(standalone: Standalone) -> float:
    return await metric(standalone, "herald_http_requests_total", service="auth")


async def _handshake_status(standalone: Standalone, token: str, source: str = "127.0.0.1") -> int:
    reader, writer = await open_tcp(standalone.port_base + 4, source)
    try:
        writer.write(upgrade_request("/ws", token))
        return (await read_head(reader, timeout_s=10))[0]
    finally:
        writer.close()


MALFORMED = [
    "ht_not-a-real-token",
    "ht_" + "A" * 42,
    "ht_" + "A" * 44,
    "hk_" + secrets.token_urlsafe(32),
    "ht_" + "!" * 43,
    "x" * 500,
]


async def test_malformed_tokens_are_refused_401_without_asking_auth(standalone: Standalone) -> None:
    before = await _auth_requests(standalone)
    for _ in range(20):
        for token in MALFORMED:
            assert await _handshake_status(standalone, token, "127.0.0.50") == 401
    assert await _auth_requests(standalone) == before
    assert await metric(standalone, "herald_push_tokens_screened_total", reason="malformed") >= 20 * len(MALFORMED)


async def test_a_refused_token_sent_again_is_refused_from_memory(standalone: Standalone) -> None:
    made_up = new_connect_token()  # the right shape, but auth never issued it
    before = await _auth_requests(standalone)
    for _ in range(30):
        assert await _handshake_status(standalone, made_up, "127.0.0.51") == 401
    assert await _auth_requests(standalone) - before == 1


async def test_real_users_connect_at_once_during_a_flood_of_made_up_tokens(
    standalone: Standalone, publisher: Publisher
) -> None:
    tokens = [await publisher.token(f"real-{index}") for index in range(10)]
    stop = asyncio.Event()
    refused = 0

    async def flood(source: str) -> None:
        nonlocal refused
        while not stop.is_set():
            made_up = new_connect_token() if refused % 2 else "ht_" + secrets.token_hex(8)
            if await _handshake_status(standalone, made_up, source) == 401:
                refused += 1

    flooders = [asyncio.create_task(flood(f"127.0.0.{2 + index % 8}")) for index in range(64)]
    try:
        await asyncio.sleep(0.5)
        took: list[float] = []
        for token in tokens:
            started = time.monotonic()
            ws = await open_ws(standalone.ws_url, token, how="header")
            await next_frame(ws, "welcome", timeout_s=5)
            took.append(time.monotonic() - started)
            await ws.close()
    finally:
        stop.set()
        await asyncio.gather(*flooders, return_exceptions=True)
    assert refused >= 200, f"the flood sent only {refused} made-up tokens"
    assert await metric(standalone, "herald_push_tokens_screened_total", reason="suspect_source") > 0
    assert max(took) < 1.0, f"real users' handshakes took up to {max(took):.3f} s during the flood"
