"""A stand-in push node for the clients' unit tests: it accepts any handshake, records how
the client authenticated, and lets the test play the server's side frame by frame (the
``expiring``/``refresh``/``refreshed`` exchange, error frames, 4001 and 4003 closes)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

WAIT_S = 5.0


@dataclass
class Peer:
    """One client connection as the fake node sees it."""

    ws: ServerConnection
    path: str
    authorization: str | None
    frames: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def expect(self, kind: str) -> dict[str, Any]:
        """The client's next frame, which must be of this type."""
        frame = await asyncio.wait_for(self.frames.get(), WAIT_S)
        assert frame.get("type") == kind, f"expected a {kind} frame, got {frame}"
        return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def message(self, channel: str, offset: int, event: str = "e") -> None:
        await self.send(
            {
                "type": "message",
                "channel": channel,
                "offset": offset,
                "id": f"m{offset}",
                "event": event,
                "data": None,
                "ts": 0,
            }
        )

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    @property
    def close_code_received(self) -> int | None:
        received = self.ws.protocol.close_rcvd
        return received.code if received else None


class FakeNode:
    def __init__(self) -> None:
        self._server: Server | None = None
        self._accepted: asyncio.Queue[Peer] = asyncio.Queue()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def __aenter__(self) -> FakeNode:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def accepted(self) -> Peer:
        """The next connection the client opened (after its welcome was sent)."""
        return await asyncio.wait_for(self._accepted.get(), WAIT_S)

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        peer = Peer(ws, ws.request.path, ws.request.headers.get("authorization"))
        await peer.send({"type": "welcome", "conn_id": "c1", "user_id": "alice", "heartbeat_s": 10, "positions": {}})
        await self._accepted.put(peer)
        try:
            async for raw in ws:
                await peer.frames.put(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            peer.ended.set()
