"""A small WebSocket test client: connect with a token, read frames of a type, bounded waits."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from herald.core import codec

WAIT_S = 10.0


async def open_ws(
    url: str, token: str, how: str = "query", max_queue: int = 16, device: str | None = None
) -> ClientConnection:
    """Connect as browsers (``query`` or ``subprotocol``) or servers (``header``) do."""
    options = {"open_timeout": WAIT_S, "max_queue": max_queue}
    if device is not None:
        url = f"{url}?device={device}"
        if how == "query":
            return await connect(f"{url}&token={token}", **options)
    if how == "header":
        return await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, **options)
    if how == "subprotocol":
        return await connect(url, subprotocols=["herald", token], **options)  # type: ignore[list-item]
    return await connect(f"{url}?token={token}", **options)


async def next_frame(ws: ClientConnection, kind: str | None = None, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """The next frame (of ``kind``, skipping others); TimeoutError if none comes in time."""
    async with asyncio.timeout(timeout_s):
        while True:
            frame = codec.loads(await ws.recv())
            if kind is None or frame.get("type") == kind:
                return frame


async def collect_messages(ws: ClientConnection, count: int, timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
    """Exactly ``count`` message frames, or whatever arrived when time ran out."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(frames) < count:
                frame = codec.loads(await ws.recv())
                if frame.get("type") == "message":
                    frames.append(frame)
    except TimeoutError:
        pass
    return frames


async def no_message_within(ws: ClientConnection, seconds: float) -> bool:
    try:
        await next_frame(ws, "message", timeout_s=seconds)
    except TimeoutError:
        return True
    return False


async def close_code(ws: ClientConnection, timeout_s: float) -> int | None:
    """The code the server closed ``ws`` with, reading (and dropping) frames until then;
    None if it is still open after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            async for _ in ws:
                pass
    except (TimeoutError, ConnectionClosed):
        pass
    return ws.close_code
