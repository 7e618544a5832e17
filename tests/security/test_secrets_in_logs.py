"""Connect tokens never reach the push node's log, wherever the client put them.

`herald dev` runs at DEBUG; clients send tokens in the query string (the last resort the
protocol allows), in refreshes, and through the Python `Subscriber` (which sends it as a
header); every path the node answers is asked with ``?token=``. Then the log is read
whole: no token may be in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from herald.core import codec
from herald.core.credentials import new_connect_token
from herald_client import Publisher, Subscriber
from tests.support.edges import running
from tests.support.procs import Standalone
from tests.support.ws import next_frame, open_ws


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with running(tmp_path_factory.mktemp("logs"), {"HERALD_LOG_LEVEL": "DEBUG"}) as herald:
        yield herald


async def test_no_connect_token_is_ever_written_to_the_push_nodes_log(
    standalone: Standalone, publisher: Publisher
) -> None:
    valid = await publisher.token("ann")
    refresh = await publisher.token("ann")
    unknown = new_connect_token()
    malformed = "ht_made-up-and-malformed"
    secrets_sent = [valid, refresh, unknown, malformed]

    ws = await open_ws(standalone.ws_url, valid, how="query")
    await next_frame(ws, "welcome")
    await ws.send(codec.dumps_text({"type": "refresh", "token": unknown}))
    assert (await next_frame(ws, "error"))["code"] == "invalid_token"
    await ws.send(codec.dumps_text({"type": "refresh", "token": refresh}))
    await next_frame(ws, "refreshed")
    await ws.close()
    for token in (unknown, malformed):
        with pytest.raises(Exception, match="401"):
            await open_ws(standalone.ws_url, token, how="query")
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/healthz", "/readyz", "/metrics", "/ops/snapshot", "/demo/nothing", "/nowhere", "/ws"):
            await http.get(f"{standalone.push_http_url}{path}?token={valid}")

    subscribed = await publisher.token("bob")
    secrets_sent.append(subscribed)
    async with Subscriber(standalone.ws_url, subscribed) as subscriber:
        await publisher.send(["bob"], "hello", {"n": 1})
        async with asyncio.timeout(10):
            message = await anext(aiter(subscriber))
    assert message["data"] == {"n": 1}

    await asyncio.sleep(0.5)  # the last lines reach the log file
    log = standalone.process.log_path.read_text(errors="replace")
    assert "DEBUG" in log.upper()  # the node did log at DEBUG
    leaked = [token for token in secrets_sent if token in log]
    assert leaked == [], f"{len(leaked)} tokens in the log"
