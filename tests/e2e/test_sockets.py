"""The push node's own WebSocket layer (services/push/socket.py) as a client sees it:
keepalive, fragments, invalid text, frames sent while the connection starts."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
from urllib.parse import urlsplit

from herald.core import codec
from herald_client import Publisher
from tests.support.procs import Standalone
from tests.support.ws import next_frame, open_ws

WAIT_S = 10.0


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame as RFC 6455 wants it: masked (payloads here are under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload)) + mask + masked


def _server_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """The first whole unmasked frame's payload and what follows it; None if incomplete."""
    if len(data) < 2:
        return None
    length, start = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, start = struct.unpack("!H", data[2:4])[0], 4
    if len(data) < start + length:
        return None
    return data[start : start + length], data[start + length :]


async def _raw_upgrade(ws_url: str, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A hand-made client that upgrades and then does only what the test tells it."""
    url = urlsplit(ws_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {url.path}?token={token} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    return reader, writer, head


async def _read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> bytes:
    """Everything the server sends until it closes the TCP connection."""
    received = b""
    async with asyncio.timeout(limit_s):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_a_client_that_answers_no_pings_is_closed_and_leaves_presence(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = f"mute-{uuid.uuid4().hex[:8]}"
    reader, writer, head = await _raw_upgrade(standalone.ws_url, await publisher.token(user))
    assert head.startswith(b"HTTP/1.1 101")
    # The node's heartbeat is 1 s here: silence for twice that closes the connection.
    received = await _read_until_closed(reader, WAIT_S)
    writer.close()
    assert b"\x88" in received  # a close frame came before the TCP close
    assert struct.pack("!H", 1011) + b"keepalive ping timeout" in received
    async with asyncio.timeout(WAIT_S):
        while (await publisher.presence(user))["online"]:
            await asyncio.sleep(0.1)


async def test_a_client_that_answers_pings_stays_connected(standalone: Standalone, publisher: Publisher) -> None:
    ws = await open_ws(standalone.ws_url, await publisher.token(f"talker-{uuid.uuid4().hex[:8]}"))
    await next_frame(ws, "welcome")
    await asyncio.sleep(3.5)  # more than the 2 s of silence that closes a mute client
    await ws.send('{"type":"ping"}')
    assert (await next_frame(ws, "pong"))["type"] == "pong"
    await ws.close()


async def test_a_fragmented_frame_is_answered_as_one(standalone: Standalone, publisher: Publisher) -> None:
    ws = await open_ws(standalone.ws_url, await publisher.token(f"frag-{uuid.uuid4().hex[:8]}"))
    await next_frame(ws, "welcome")
    await ws.send(['{"type":', '"ping"', "}"])
    assert (await next_frame(ws, "pong"))["type"] == "pong"
    await ws.close()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(standalone: Standalone, publisher: Publisher) -> None:
    reader, writer, _ = await _raw_upgrade(standalone.ws_url, await publisher.token(f"bad-{uuid.uuid4().hex[:8]}"))
    writer.write(_masked(0x1, b'{"type":"\xff\xfe"}'))
    received = await _read_until_closed(reader, WAIT_S)
    writer.close()
    assert struct.pack("!H", 1007) in received


async def test_frames_sent_before_the_welcome_are_answered_in_order(
    standalone: Standalone, publisher: Publisher
) -> None:
    reader, writer, _ = await _raw_upgrade(standalone.ws_url, await publisher.token(f"eager-{uuid.uuid4().hex[:8]}"))
    writer.write(_masked(0x1, b'{"type":"ping"}') + _masked(0x1, b'{"type":"nonsense"}'))
    frames: list[dict[str, object]] = []
    buffered = b""
    async with asyncio.timeout(WAIT_S):
        while len(frames) < 3:
            buffered += await reader.read(65536)
            while (frame := _server_frame(buffered)) is not None:
                payload, buffered = frame
                frames.append(codec.loads(payload))
    writer.close()
    assert [frame["type"] for frame in frames] == ["welcome", "pong", "error"]


async def test_closing_from_the_client_side_clears_presence(standalone: Standalone, publisher: Publisher) -> None:
    user = f"leaver-{uuid.uuid4().hex[:8]}"
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    await next_frame(ws, "welcome")
    assert (await publisher.presence(user))["online"] is True
    await ws.close()
    assert ws.close_code == 1000
    async with asyncio.timeout(WAIT_S):
        while (await publisher.presence(user))["online"]:
            await asyncio.sleep(0.05)
