"""The baseline: a bare ``websockets`` server, configured as a push node is (no compression,
the same keepalive pings, uvloop), holding connections and nothing else.

It answers ``{"type":"ping"}`` with ``{"type":"pong"}`` as Herald does. A connection to
``/control`` is not counted as a client: it sends ``{"type":"bench-broadcast","count":M,
"size":B}`` and the server sends M messages shaped like Herald's message frames (data of B
bytes of JSON) to every client with ``websockets.broadcast``, yielding to the event loop
between messages as a push node does between bus deliveries, then answers ``{"done":...}``.

    python bench/bare_server.py --port 9000 [--reuse-port] [--heartbeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

PING = '{"type":"ping"}'
PONG = '{"type":"pong"}'

clients: set[ServerConnection] = set()


def message_frame(offset: int, size: int) -> bytes:
    """A frame shaped like Herald's: the same fields, ``data`` of ``size`` bytes of JSON."""
    data = {"t": time.monotonic(), "pad": ""}
    data["pad"] = "x" * max(0, size - len(orjson.dumps(data)))
    return orjson.dumps(
        {
            "type": "message",
            "channel": "group:bench",
            "offset": offset,
            "id": uuid.uuid4().hex[:26],
            "event": "bench",
            "data": data,
            "ts": int(time.time() * 1000),
        }
    )


async def control(ws: ServerConnection) -> None:
    async for raw in ws:
        command = orjson.loads(raw)
        if command.get("type") != "bench-broadcast":
            continue
        started = time.monotonic()
        for offset in range(1, int(command["count"]) + 1):
            broadcast(clients, message_frame(offset, int(command.get("size", 100))), text=True)
            await asyncio.sleep(0)
        await ws.send(orjson.dumps({"done": time.monotonic() - started, "clients": len(clients)}).decode())


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path.startswith("/control"):
        await control(ws)
        return
    clients.add(ws)
    try:
        async for message in ws:
            if message == PING:
                await ws.send(PONG)
    finally:
        clients.discard(ws)


async def main(port: int, reuse_port: bool, heartbeat_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=64 * 1024,
        # 0: no keepalive task per connection (to see what that task costs in memory)
        ping_interval=heartbeat_s or None,
        ping_timeout=heartbeat_s * 2 or None,
        close_timeout=2,
        reuse_port=reuse_port,
        # A push node's listen backlog (services/push/server.py BACKLOG): with the default
        # 100, more handshakes in flight than that overflow the accept queue and their SYNs
        # are retried a second later, which would be the bare server's loss, not its speed.
        backlog=4096,
    ) as server:
        print(f"bare websockets server {os.getpid()} listening on {port}", file=sys.stderr, flush=True)
        await stop.wait()
        server.close(close_connections=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="ping interval; 0 turns keepalive off")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.port, args.reuse_port, args.heartbeat))
    else:
        uvloop.run(main(args.port, args.reuse_port, args.heartbeat))
