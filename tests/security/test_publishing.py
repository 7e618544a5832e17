"""Client publishes under attack: a publish hook that trickles, answers too much, or is
slow for one app; and a client publishing faster than its app's ``messages_per_s``.

The hook is an HTTP server on the loopback that misbehaves as each path says. Before,
the hook's 2 s timeout was per read (a byte a second kept it going), its whole answer was
read whatever the size, and all apps shared one connection pool of 100; and socket
publishes were not charged to the app's rate at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from herald.core import codec
from herald_client import HeraldAPIError, Operator, Publisher
from tests.support.edges import running
from tests.support.procs import Standalone
from tests.support.ws import next_frame, open_ws

HOOK_TIMEOUT_S = 1.5
PER_APP = 4
ENV = {
    "HERALD_PUBLISH_HOOK_TIMEOUT_S": str(HOOK_TIMEOUT_S),
    "HERALD_PUBLISH_HOOK_CONCURRENCY": str(PER_APP),
    # 120 sockets opening at once on a shared machine: pongs may come later than 2 s.
    "HERALD_HEARTBEAT_S": "5",
}
HUGE_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with running(tmp_path_factory.mktemp("publishing"), ENV) as herald:
        yield herald


class BadHook:
    """``/allow`` answers at once; ``/trickle`` sends its answer a byte every 0.4 s;
    ``/huge`` streams a 64 MiB verdict; ``/slow`` waits 5 s before answering."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BadHook:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            await reader.readexactly(length)
            self.calls[path] = self.calls.get(path, 0) + 1
            await getattr(self, "_" + path.strip("/"))(writer)
        writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _allow(self, writer: asyncio.StreamWriter) -> None:
        await self._answer(writer, b'{"allow": true}')

    async def _slow(self, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        await self._answer(writer, b'{"allow": true}')

    async def _trickle(self, writer: asyncio.StreamWriter) -> None:
        body = b'{"allow": true, "padding": "' + b" " * 40 + b'"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(f"Content-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.4)

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        writer.write(b'1c\r\n{"allow": true, "padding": "\r\n')
        for _ in range(HUGE_BYTES // len(chunk)):
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        writer.write(b'2\r\n"}\r\n0\r\n\r\n')
        await writer.drain()


@pytest.fixture
async def hook() -> AsyncIterator[BadHook]:
    async with BadHook() as server:
        yield server


async def _apps(standalone: Standalone, *configs: dict[str, Any]) -> list[Publisher]:
    """A new app for each config, once every service sees its config."""
    publishers = []
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        for config in configs:
            created = await operator.create_app(f"edge-{uuid.uuid4().hex[:8]}")
            await operator.configure(created["app_id"], **config)
            publishers.append(Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]))
    await asyncio.sleep(2.2)  # services cache an app's config for up to 2 s
    return publishers


async def _socket(standalone: Standalone, publisher: Publisher, user: str) -> ClientConnection:
    ws = await open_ws(standalone.ws_url, await publisher.token(user, publish=["user:*"]), how="header")
    await next_frame(ws, "welcome")
    return ws


async def _publish(ws: ClientConnection, seq: int, timeout_s: float = 10) -> tuple[dict[str, Any], float]:
    """The reply to one publish, and how long it took."""
    started = time.monotonic()
    await ws.send(codec.dumps_text({"type": "publish", "seq": seq, "channel": "user:bob", "event": "chat"}))
    reply = await next_frame(ws, "reply", timeout_s=timeout_s)
    return reply, time.monotonic() - started


async def test_a_hook_trickling_its_answer_is_cut_at_the_overall_deadline(
    standalone: Standalone, hook: BadHook
) -> None:
    [publisher] = await _apps(standalone, {"publish_hook_url": hook.url("/trickle")})
    async with publisher:
        ws = await _socket(standalone, publisher, "ann")
        reply, took = await _publish(ws, 1)
        await ws.close()
    assert reply["error"]["code"] == "refused_by_hook", reply
    assert "did not answer within" in reply["error"]["message"]
    assert took < HOOK_TIMEOUT_S + 1.0


async def test_a_hook_answer_over_the_cap_is_refused_without_reading_it_all(
    standalone: Standalone, hook: BadHook
) -> None:
    [publisher] = await _apps(standalone, {"publish_hook_url": hook.url("/huge")})
    async with publisher:
        ws = await _socket(standalone, publisher, "ann")
        reply, took = await _publish(ws, 1)
        await ws.close()
    assert reply["error"]["code"] == "refused_by_hook", reply
    assert "answered more than" in reply["error"]["message"]
    assert took < 1.0


async def test_one_apps_slow_hook_does_not_hold_another_apps_publishes(standalone: Standalone, hook: BadHook) -> None:
    slow, quick = await _apps(
        standalone, {"publish_hook_url": hook.url("/slow")}, {"publish_hook_url": hook.url("/allow")}
    )
    async with slow, quick:
        crowd = await asyncio.gather(*(_socket(standalone, slow, f"crowd-{index}") for index in range(120)))
        other = await _socket(standalone, quick, "ann")
        for index, ws in enumerate(crowd):
            await ws.send(codec.dumps_text({"type": "publish", "seq": index, "channel": "user:bob", "event": "chat"}))
        await asyncio.sleep(0.3)  # the slow app's publishes are all waiting on its hook now
        reply, took = await _publish(other, 1)
        await asyncio.gather(*(ws.close() for ws in [*crowd, other]))
    assert "error" not in reply, reply
    assert took < 1.0
    assert hook.calls.get("/slow", 0) <= PER_APP * 2  # its slots, each once per deadline at most


async def test_socket_publishes_are_charged_to_the_apps_message_rate(standalone: Standalone) -> None:
    [publisher] = await _apps(standalone, {"limits": {"messages_per_s": 1, "burst": 3}})
    async with publisher:
        ws = await _socket(standalone, publisher, "ann")
        codes = [(await _publish(ws, seq))[0].get("error", {}).get("code") for seq in range(8)]
        await ws.close()
        assert codes[:3] == [None, None, None]
        assert codes.count("rate_limited") >= 4, codes
        # The same bucket as collect's: right after the socket emptied it, a POST is refused too.
        with pytest.raises(HeraldAPIError) as refused:
            await publisher.send(["bob"], "chat", {"n": 1})
    assert refused.value.status == 429
