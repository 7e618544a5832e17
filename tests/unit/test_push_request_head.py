"""A request head read in one pass is the request websockets' parser reads from the same
bytes; whatever that parser would refuse or read differently is left to it."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.streams import StreamReader

from herald.services.push.request_head import parse_head
from herald.services.push.socket import Socket
from tests.unit.test_push_churn import UPGRADE, _no_subprotocol, _Transport

BROWSER = (
    b"GET /ws?token=t0k3n&device=web HTTP/1.1\r\nHost: 127.0.0.1:8004\r\nConnection: Upgrade\r\n"
    b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Upgrade: websocket\r\nOrigin: http://127.0.0.1:8004\r\nSec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: 8dL0cQ7d0h0c3Hn2bC3R9A==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)


def websockets_reads(data: bytes) -> tuple[Request, bytes] | None:
    """What websockets' own parser reads from ``data`` (and leaves after it), or None when
    it refuses the request or needs more bytes."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Request.parse(reader.read_line)
    try:
        while True:
            next(parser)
    except StopIteration as done:
        return done.value, bytes(reader.buffer)
    except Exception:
        return None


def same(ours: tuple[Request, bytes], theirs: tuple[Request, bytes]) -> bool:
    (a, rest_a), (b, rest_b) = ours, theirs
    fields = (a.method, a.path, a.protocol, list(a.headers.raw_items()), rest_a)
    return fields == (b.method, b.path, b.protocol, list(b.headers.raw_items()), rest_b)


def test_a_browsers_handshake_is_read_in_one_pass_as_websockets_reads_it() -> None:
    ours = parse_head(BROWSER + b"\x81\x80")

    assert ours is not None
    theirs = websockets_reads(BROWSER + b"\x81\x80")
    assert theirs is not None and same(ours, theirs)
    assert ours[0].path == "/ws?token=t0k3n&device=web" and ours[1] == b"\x81\x80"


names = st.sampled_from([b"Host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"X-Y", b"bad name", b"", b"A\x80"])
values = st.binary(max_size=30) | st.sampled_from([b"websocket", b" padded \t", b"a\r\nb", b"x\ny", b"0", b"5"])
lines = st.tuples(names, st.sampled_from([b":", b": ", b""]), values).map(lambda t: b"".join(t))
heads = st.tuples(
    st.sampled_from([b"GET", b"POST", b"G\xc3\xa9T"]),
    st.sampled_from([b"/ws", b"/ws?token=a b", b"/\xff", b"/p?x=1"]),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1"]),
    st.lists(lines | st.sampled_from([b"Content-Length: 0", b"Content-Length: 3", b"Transfer-Encoding: chunked"])),
    st.sampled_from([b"\r\n", b"\n"]),
    st.binary(max_size=8),
)


def build(parts: tuple[bytes, bytes, bytes, list[bytes], bytes, bytes]) -> bytes:
    method, path, protocol, header_lines, newline, after = parts
    return b"".join([method, b" ", path, b" ", protocol, newline, *(h + newline for h in header_lines), newline, after])


@given(heads.map(build) | st.binary(max_size=200))
@example(UPGRADE)
@example(b"GET /ws HTTP/1.1\r\n" + b"X: 1\r\n" * MAX_NUM_HEADERS + b"\r\n")
@example(b"GET /ws HTTP/1.1\r\n" + b"X: 1\r\n" * (MAX_NUM_HEADERS + 1) + b"\r\n")
@example(b"GET /" + b"a" * (MAX_LINE_LENGTH - 16) + b" HTTP/1.1\r\n\r\n")
@example(b"GET /" + b"a" * (MAX_LINE_LENGTH - 15) + b" HTTP/1.1\r\n\r\n")
@example(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # the head not whole yet
@example(b"\r\nGET /ws HTTP/1.1\r\n\r\n")
def test_a_head_read_in_one_pass_is_what_websockets_reads(data: bytes) -> None:
    ours = parse_head(data)
    if ours is not None:
        theirs = websockets_reads(data)
        assert theirs is not None and same(ours, theirs)


class _Requests:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def accepted(self, sock: Any) -> None: ...

    def request(self, sock: Any, request: Any) -> None:
        self.requests.append(request)

    def message(self, sock: Any, data: str | bytes) -> None: ...

    def closing(self, sock: Any) -> bool:
        return False

    def lost(self, sock: Any) -> None: ...


def test_a_head_split_across_reads_is_left_to_websockets_and_handed_over_once() -> None:
    events = _Requests()
    sock = Socket(events, 65536, _no_subprotocol)
    sock.connection_made(_Transport())  # type: ignore[arg-type]

    sock.data_received(UPGRADE[:20])
    sock.data_received(UPGRADE[20:])

    [request] = events.requests
    assert request.path == "/ws" and request.headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert sock.protocol.accept(request).status_code == 101


def test_a_whole_head_is_handed_over_once_and_the_socket_upgrades() -> None:
    events = _Requests()
    sock = Socket(events, 65536, _no_subprotocol)
    sock.connection_made(_Transport())  # type: ignore[arg-type]

    sock.data_received(UPGRADE)
    sock.data_received(b"\x81\x82\x00\x00\x00\x00hi")  # a frame before the answer: not a request

    [request] = events.requests
    assert sock.protocol.accept(request).status_code == 101


async def test_a_head_after_refused_first_bytes_is_not_read() -> None:
    events = _Requests()
    sock = Socket(events, 65536, _no_subprotocol)
    sock.connection_made(_Transport())  # type: ignore[arg-type]

    sock.data_received(b"NOT HTTP\r\n\r\n")  # websockets refuses it and ends the handshake
    sock.data_received(UPGRADE)

    assert events.requests == []
