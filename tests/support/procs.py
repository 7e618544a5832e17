"""Run Herald as real OS processes for end-to-end and cluster tests; always bounded, always reaped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.servers import LISTEN_PORTS, free_port, wait_for_port


def free_port_block(count: int, attempts: int = 50) -> int:
    """A base port such that base+1 .. base+count are all free right now."""
    import socket

    for _ in range(attempts):
        base = free_port()
        if base + count >= LISTEN_PORTS.stop:
            continue
        socks = []
        try:
            for offset in range(1, count + 1):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free block of ports")


@dataclass
class HeraldProcess:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout_s: float = 30.0) -> None:
        self.spawn()
        self.await_healthy(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting for it (``await_healthy`` waits)."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "herald.services.cli", *self.args],
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def await_healthy(self, timeout_s: float = 30.0) -> None:
        assert self.process is not None, f"{self.name} was not started"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout_s}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Standalone:
    process: HeraldProcess
    data_dir: Path
    port_base: int

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 1}"

    @property
    def collect_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 2}"

    @property
    def push_http_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 4}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port_base + 4}/ws"

    @property
    def admin_token(self) -> str:
        return json.loads((self.data_dir / "dev-secrets.json").read_text())["admin_token"]

    @property
    def demo(self) -> dict[str, str]:
        return json.loads((self.data_dir / "demo-app.json").read_text())


def start_standalone(directory: Path, env: dict[str, str] | None = None) -> Standalone:
    base = free_port_block(4)
    data_dir = directory / "herald-data"
    process = HeraldProcess(
        "standalone",
        ["dev", "--port-base", str(base)],
        {"HERALD_DATA_DIR": str(data_dir), "HERALD_HEARTBEAT_S": "1", **(env or {})},
        directory / "standalone.log",
        base + 1,
    )
    process.start()
    for port in (base + 2, base + 3, base + 4):
        wait_for_port(port)
    return Standalone(process, data_dir, base)
