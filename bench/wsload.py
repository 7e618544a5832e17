"""WebSocket load clients cheap enough to share two cores with the server they load.

A benchmark's clients run on the same machine as the server, so every microsecond a
client spends per frame is taken from the server. ``websockets``' own client validates,
queues and decodes each frame (tens of microseconds); these clients parse the RFC 6455
frame header, count the frame and only decode it when asked to. Server frames are never
masked; client frames carry a zero masking key (legal in RFC 6455, and pointless to
randomise on loopback). Pings are answered, closes are echoed.

Run as a worker process (``python bench/wsload.py``), it reads one JSON command per line
on stdin and answers one JSON line on stdout; ``Workers`` drives a set of them from the
benchmark. Each worker opens its connections from its own loopback source address, so
N workers hold N times the ~28k ephemeral ports of one address, and stays under the
20,000 open files a process may have here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

PING_FRAME = b'{"type":"ping"}'
RESUME_FRAME = b'{"type":"resume","positions":{}}'
KEY = base64.b64encode(os.urandom(16)).decode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame with a zero key (so the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Pool:
    """What a worker's connections share: counters, and the waiting handshakes."""

    def __init__(self) -> None:
        self.conns: list[Client] = []
        self.frames = 0
        self.first_frame = 0.0
        self.last_frame = 0.0
        self.latencies: list[float] | None = None  # when set, message frames are decoded
        self.closed = 0
        self.close_codes: dict[str, int] = {}
        self.pings_sent = 0
        self.pongs_to_server = 0

    def on_frame(self, conn: Client, payload: bytes) -> None:
        now = time.monotonic()
        if not conn.counting:
            conn.counting = True  # the first frame (welcome) is the handshake's, not a delivery
            return
        if payload.startswith(b'{"type":"pong"'):
            if conn.waiter is not None and not conn.waiter.done():
                conn.waiter.set_result(now)
            return
        self.frames += 1
        if not self.first_frame:
            self.first_frame = now
        self.last_frame = now
        if self.latencies is not None:
            data = orjson.loads(payload).get("data")
            if isinstance(data, dict) and "t" in data:
                self.latencies.append((now - data["t"]) * 1000)


class Client(asyncio.Protocol):
    __slots__ = ("buf", "counting", "handshake", "opened", "pool", "request", "transport", "upgraded", "waiter")

    def __init__(self, pool: Pool, request: bytes, welcome: bool) -> None:
        self.pool = pool
        self.request = request
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        # Resolves when the connection is usable: the welcome frame, or the 101 for servers
        # that send none. Holds the HTTP status on a refused upgrade.
        self.handshake: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future[float] | None = None
        self.counting = not welcome
        self.opened = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(buf[9:12])
            if status != 101:
                if not self.handshake.done():
                    self.handshake.set_result(status)
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            del buf[: end + 4]
            if self.counting and not self.handshake.done():
                self.handshake.set_result(101)
        pos = 0
        size = len(buf)
        pool = self.pool
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + n:
                break
            opcode = b0 & 0x0F
            start = pos + head
            pos = start + n
            if opcode == 0x1 or opcode == 0x2:
                if not self.counting or self.waiter is not None or pool.latencies is not None:
                    if not self.counting and not self.handshake.done():
                        self.handshake.set_result(101)
                    pool.on_frame(self, bytes(buf[start:pos]))
                else:
                    pool.frames += 1
                    now = time.monotonic()
                    if not pool.first_frame:
                        pool.first_frame = now
                    pool.last_frame = now
            elif opcode == 0x9:
                pool.pongs_to_server += 1
                self.transport.write(client_frame(bytes(buf[start:pos]), 0xA))  # type: ignore[union-attr]
            elif opcode == 0x8:
                code = int.from_bytes(buf[start : start + 2], "big") if n >= 2 else 1005
                pool.close_codes[str(code)] = pool.close_codes.get(str(code), 0) + 1
                self.transport.write(client_frame(bytes(buf[start : start + 2]), 0x8))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                break
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.closed += 1
        if not self.handshake.done():
            self.handshake.set_result(0)
        self.transport = None


def upgrade_request(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Worker:
    def __init__(self) -> None:
        self.pool = Pool()

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open one connection per path, ``concurrency`` handshakes in flight at a time."""
        loop = asyncio.get_running_loop()
        host, port, source = cmd["host"], cmd["port"], cmd.get("source")
        welcome, resume = cmd.get("welcome", True), cmd.get("resume", True)
        paths: list[str] = cmd["paths"]
        statuses: dict[str, int] = {}
        times: list[float] = []
        next_path = iter(paths)

        async def one(path: str) -> None:
            started = time.monotonic()
            conn = Client(self.pool, upgrade_request(host, port, path), welcome)
            try:
                await loop.create_connection(lambda: conn, host, port, local_addr=(source, 0) if source else None)
                if resume:
                    conn.send(RESUME_FRAME)
                status = await asyncio.wait_for(conn.handshake, cmd.get("timeout_s", 30))
            except (OSError, TimeoutError) as exc:
                status = -1
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                if conn.transport is not None:
                    conn.transport.abort()
            if status == 101:
                self.pool.conns.append(conn)
                times.append((time.monotonic() - started) * 1000)
            elif status != -1:
                statuses[str(status)] = statuses.get(str(status), 0) + 1

        async def lane() -> None:
            for path in next_path:
                await one(path)

        started = time.monotonic()
        await asyncio.gather(*(lane() for _ in range(max(1, cmd.get("concurrency", 50)))))
        finished = time.monotonic()
        times.sort()
        return {
            "event": "opened",
            "ok": len(times),
            "failed": statuses,
            "started": started,
            "finished": finished,
            "handshake_ms": [round(times[int(q * (len(times) - 1))], 2) for q in (0.5, 0.99)] if times else [],
        }

    async def ping(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Round trips of application pings on a sample of connections, a round every ``interval_s``."""
        sample = [c for c in self.pool.conns if c.transport is not None][: cmd.get("sample", 20)]
        rtts: list[float] = []
        lost = 0
        loop = asyncio.get_running_loop()
        for _ in range(cmd.get("rounds", 1)):
            round_started = time.monotonic()
            waits = []
            for conn in sample:
                conn.waiter = loop.create_future()
                conn.send(PING_FRAME)
                waits.append((conn, time.monotonic()))
            for conn, sent in waits:
                try:
                    answered = await asyncio.wait_for(asyncio.shield(conn.waiter), cmd.get("timeout_s", 10))
                    rtts.append((answered - sent) * 1000)
                except TimeoutError:
                    lost += 1
                conn.waiter = None
            await asyncio.sleep(max(0.0, cmd.get("interval_s", 1.0) - (time.monotonic() - round_started)))
        return {"event": "pings", "rtts": [round(r, 3) for r in rtts], "lost": lost}

    def stats(self, cmd: dict[str, Any]) -> dict[str, Any]:
        pool = self.pool
        result: dict[str, Any] = {
            "event": "stats",
            "frames": pool.frames,
            "first": pool.first_frame,
            "last": pool.last_frame,
            "open": sum(1 for c in pool.conns if c.transport is not None),
            "closed": pool.closed,
            "close_codes": pool.close_codes,
            "server_pings": pool.pongs_to_server,
        }
        if pool.latencies is not None and cmd.get("latencies"):
            result["latencies"] = [round(x, 3) for x in pool.latencies]
        if cmd.get("reset"):
            pool.frames, pool.first_frame, pool.last_frame = 0, 0.0, 0.0
            if pool.latencies is not None:
                pool.latencies = []
        if "decode" in cmd:
            pool.latencies = [] if cmd["decode"] else None
        return result

    def close(self) -> dict[str, Any]:
        """Close every connection (1000) and start a fresh pool."""
        for conn in self.pool.conns:
            if conn.transport is not None:
                conn.transport.write(client_frame(b"\x03\xe8", 0x8))
                conn.transport.close()
        count = len(self.pool.conns)
        self.pool = Pool()
        return {"event": "closed", "connections": count}


async def serve_commands() -> None:
    worker = Worker()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "open":
            answer = await worker.open(cmd)
        elif kind == "ping":
            answer = await worker.ping(cmd)
        elif kind == "stats":
            answer = worker.stats(cmd)
        elif kind in ("close", "drop"):
            answer = worker.close()
            await asyncio.sleep(0.5)
        else:
            answer = {"event": "error", "message": f"unknown command {kind}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if kind == "close":
            return


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_commands())
    else:
        uvloop.run(serve_commands())


# The benchmark's side ------------------------------------------------------------------
class Workers:
    """A set of worker processes, each answering one JSON line per command."""

    def __init__(self, count: int, log_dir: Path) -> None:
        from common import Proc

        here = Path(__file__).resolve()
        self.procs = [
            Proc(f"wsload-{i}", [sys.executable, str(here)], log=log_dir / f"wsload-{i}.log", pipes=True)
            for i in range(count)
        ]

    def __len__(self) -> int:
        return len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def call(self, commands: Sequence[dict[str, Any] | None], timeout_s: float = 300) -> list[dict[str, Any] | None]:
        """Send each worker its command (None: skip it) and wait for every answer."""
        waiting: dict[int, int] = {}
        for index, (proc, cmd) in enumerate(zip(self.procs, commands, strict=True)):
            if cmd is None:
                continue
            assert proc.popen.stdin is not None and proc.popen.stdout is not None
            proc.popen.stdin.write(orjson.dumps(cmd) + b"\n")
            proc.popen.stdin.flush()
            waiting[proc.popen.stdout.fileno()] = index
        answers: list[dict[str, Any] | None] = [None] * len(self.procs)
        deadline = time.monotonic() + timeout_s
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load workers did not answer within {timeout_s:.0f} s")
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                index = waiting.pop(fd)
                stdout = self.procs[index].popen.stdout
                assert stdout is not None
                line = stdout.readline()
                if not line:
                    raise RuntimeError(f"load worker {index} died:\n{self.procs[index].log_tail()}")
                answers[index] = json.loads(line)
        return answers

    def all(self, cmd: dict[str, Any], timeout_s: float = 300) -> list[dict[str, Any]]:
        return [a for a in self.call([cmd] * len(self.procs), timeout_s) if a is not None]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.all({"cmd": "close"}, timeout_s=30)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
            proc.stop(timeout_s=5)


if __name__ == "__main__":
    main()
