"""The push node's HTTP link to auth, against a small HTTP server on loopback.

The server answers each request with what the test queued (raw bytes), and records the
requests and how many connections they came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from herald.services.push.auth_link import MAX_ANSWER_BYTES, AuthLink, LinkError


def ok(body: bytes, *, close: bool = False) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\n" + connection + b"content-length: %d\r\n\r\n" % len(body) + body


@dataclass
class Auth:
    answers: list[bytes | None] = field(default_factory=list)  # None: close without answering
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0) if self.answers else ok(b"{}")
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        writer.close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def auth() -> AsyncIterator[Auth]:
    auth = Auth()
    server = await asyncio.start_server(auth.serve, "127.0.0.1", 0)
    auth.port = server.sockets[0].getsockname()[1]
    yield auth
    for writer in auth.writers:
        writer.close()
    server.close()


def link(url: str, timeout_s: float = 2.0) -> AuthLink:
    return AuthLink(url, {"authorization": "Bearer s"}, timeout_s, 4)


async def test_requests_in_turn_share_one_kept_connection(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [ok(b'{"n": 1}'), ok(b'{"n": 2}'), ok(b'{"n": 3}')]

    bodies = [(await client.post("/v1/introspect", b"{}")).body for _ in range(3)]

    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert auth.connections == 1
    await client.close()


async def test_a_request_carries_the_path_prefix_headers_and_body(auth: Auth) -> None:
    client = link(auth.url("/auth/"))

    await client.post("/v1/introspect/batch", b'{"tokens": ["t"]}')

    head, _, body = auth.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /auth/v1/introspect/batch HTTP/1.1\r\n")
    assert b"authorization: Bearer s" in head and b"Content-Type: application/json" in head
    assert body == b'{"tokens": ["t"]}'
    await client.close()


async def test_a_chunked_answer_is_read_whole(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n']

    answer = await client.post("/x", b"{}")

    assert (answer.status, answer.body) == (200, b'{"a": 1}')
    await client.close()


async def test_a_connection_the_server_closed_while_kept_is_replaced_without_failing(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [ok(b"1"), None, ok(b"2")]  # the second request finds its kept connection closing
    await client.post("/x", b"{}")

    answer = await client.post("/x", b"{}")

    assert answer.body == b"2"
    assert auth.connections == 2
    await client.close()


async def test_an_answer_saying_close_is_not_kept(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [ok(b"1", close=True), ok(b"2")]

    await client.post("/x", b"{}")
    await client.post("/x", b"{}")

    assert auth.connections == 2
    await client.close()


async def test_a_status_other_than_200_is_the_answer(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"]

    assert (await client.post("/x", b"{}")).status == 404
    await client.close()


async def test_a_server_that_does_not_answer_in_time_fails_the_request(auth: Auth) -> None:
    client = link(auth.url(), timeout_s=0.3)
    auth.answers = [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{"]  # never finishes

    with pytest.raises(LinkError, match=r"no answer in 0\.3 s"):
        await client.post("/x", b"{}")
    await client.close()


async def test_something_that_is_not_http_fails_the_request(auth: Auth) -> None:
    client = link(auth.url())
    auth.answers = [b"SSH-2.0-OpenSSH\r\n\r\n"] * 2

    with pytest.raises(LinkError, match="not an HTTP answer"):
        await client.post("/x", b"{}")
    await client.close()


async def test_an_answer_over_the_limit_is_refused(auth: Auth) -> None:
    client = link(auth.url())
    size = MAX_ANSWER_BYTES + 1
    auth.answers = [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b" " * size]

    with pytest.raises(LinkError, match="an answer over"):
        await client.post("/x", b"{}")
    await client.close()


async def test_an_unreachable_auth_fails_the_request() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = link(f"http://127.0.0.1:{port}")

    with pytest.raises(LinkError, match="unreachable: ConnectionRefusedError"):
        await client.post("/x", b"{}")


def test_a_url_that_is_not_http_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="not an http"):
        link("ftp://auth")


async def test_connections_the_server_closed_leave_no_cyclic_garbage(auth: Auth) -> None:
    # The parser holds the connection's callbacks: a push node opens a connection again
    # after every keep-alive timeout of auth, and its rare full collections let such
    # cycles pile up (issue 18). asyncio's own selector transports are cyclic anyway
    # (uvloop's, which the services run on, are not): only the link's objects count.
    client = link(auth.url())
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            auth.answers = [ok(b"1", close=True)]
            await client.post("/x", b"{}")
        await asyncio.sleep(0.05)  # the closes are seen
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith(("herald", "httptools"))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    await client.close()

    assert left == []
