"""The push node's HTTP/1.1 link to auth: keep-alive connections carrying JSON POSTs.

Every handshake waits on an introspection request, so its client's cost is paid per
connect: httpx spent about 15% of a connecting node's CPU building requests, URLs,
headers and streams it did not need. This link does the one thing asked of it: it keeps
a few connections to auth open and writes each request as one prepared buffer, and reads
the answer with httptools (llhttp: content-length and chunked bodies, keep-alive).

One request at a time per connection; at most ``max_connections`` open. A request sent
on a kept connection that the server had closed meanwhile (an idle timeout) is sent once
more on a new one before any answer arrived: introspection reads, so repeating it is safe.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

# An answer larger than this is refused: auth's answers are a few KiB per 256 tokens.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class LinkError(Exception):
    """The request got no usable answer: unreachable, closed, timed out, or not HTTP."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept connection: a request written, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._status = 0
        self._body: list[bytes] = []
        self._size = 0
        self._keep = False

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        if self.transport is None or self.closed:
            raise LinkError("the connection closed before the request")
        self._waiter = asyncio.get_running_loop().create_future()
        self._status, self._body, self._size, self._keep = 0, [], 0, False
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(LinkError(f"not an HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(LinkError("the connection closed before the answer"))
        # The parser holds this protocol's callbacks: unlinked, a closed connection goes with
        # reference counting, not as cyclic garbage waiting for a full collection.
        self._parser = None
        self.transport = None

    # httptools callbacks
    def on_headers_complete(self) -> None:
        assert self._parser is not None  # parsing: not lost yet
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            self._fail(LinkError(f"an answer over {MAX_ANSWER_BYTES} bytes"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None  # parsing: not lost yet
        self._keep = self._parser.should_keep_alive()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._status, b"".join(self._body)))
        elif waiter is None:
            self.close()  # an answer nobody asked for: the connection is out of step

    def _fail(self, error: LinkError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class AuthLink:
    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, max_connections: int) -> None:
        """``base_url``: http or https, with an optional path prefix; ``headers`` go on every request."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        authority = url.netloc.rpartition("@")[2]
        fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {authority}\r\n{fixed}Content-Type: application/json\r\n"
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(self, path: str, body: bytes) -> Answer:
        """POST ``body`` (JSON) to ``path``; raises LinkError without an answer in time."""
        request = (
            f"POST {self._prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
            + body
        )
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._exchange(request)
            except TimeoutError:
                raise LinkError(f"no answer in {self._timeout_s:g} s") from None
            except OSError as exc:
                raise LinkError(f"unreachable: {exc.__class__.__name__}") from None

    async def _exchange(self, request: bytes) -> Answer:
        conn = self._kept()
        if conn is not None:
            try:
                return await self._send(conn, request)
            except LinkError:
                pass  # most likely closed by the server meanwhile (its idle timeout): once more, on a new one
        return await self._send(await self._open(), request)

    def _kept(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _send(self, conn: _Connection, request: bytes) -> Answer:
        try:
            answer = await conn.send(request)
        except BaseException:
            conn.close()  # timed out or cancelled mid-answer: its state is unknown
            raise
        if conn.reusable and not self._closed:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        return conn

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
