"""WebSocket at the byte level, for the security tests: handshakes sent a line at a time,
from a chosen loopback source address, and frames no well-behaved library would send
(invalid UTF-8, fragmented control frames, bad opcodes, frames before the welcome).

Every read has a deadline: nothing here waits on a server that stopped answering.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass

from websockets.frames import Opcode

HANDSHAKE_LINES = (
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: {key}",
    "Sec-WebSocket-Version: 13",
)


def upgrade_request(path: str, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", *(line.format(key=key) for line in HANDSHAKE_LINES)]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_tcp(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the node from ``source`` (any 127.x.y.z address on Linux)."""
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=1 << 20), 5)


async def read_head(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """The status code of an HTTP answer and its head; the body (if any) stays unread."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    return int(head.split(b" ", 2)[1]), head


async def upgrade(
    port: int, token: str, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_tcp(port, source)
    writer.write(upgrade_request("/ws", token))
    status, head = await read_head(reader)
    if status != 101:
        writer.close()
        raise AssertionError(f"upgrade refused: {head!r}")
    return reader, writer


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """One masked client frame; ``opcode`` may be any 4-bit value, valid or not."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0x0F)
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def text(payload: str | bytes) -> bytes:
    return client_frame(Opcode.TEXT, payload.encode() if isinstance(payload, str) else payload)


@dataclass(frozen=True)
class ServerFrame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != Opcode.CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


async def read_frame(reader: asyncio.StreamReader, timeout_s: float) -> ServerFrame | None:
    """The next server frame (unmasked, unfragmented as the node sends them); None at EOF.
    A reset connection raises ConnectionResetError."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), timeout_s)
    except asyncio.IncompleteReadError:
        return None
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout_s))[0]
    elif length == 127:
        length = struct.unpack("!Q", await asyncio.wait_for(reader.readexactly(8), timeout_s))[0]
    payload = await asyncio.wait_for(reader.readexactly(length), timeout_s) if length else b""
    return ServerFrame(head[0] & 0x0F, payload)


async def closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True if the server closes the connection (EOF or reset) within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return True
