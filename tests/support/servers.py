"""Start and find the servers tests run against. Loopback only, every wait bounded."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# Below the kernel's ephemeral range (32768-60999 by default): a port the kernel hands out
# for port 0 is also one it may give any outgoing connection (to Redis, to RabbitMQ) before
# the server we start binds it, and a RabbitMQ restart reconnects everything at once.
LISTEN_PORTS = range(20_000, 32_000)


def free_port() -> int:
    """A port free to listen on now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free listening port")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


def nx_27017_command() -> str:
    """The stand-in's console script, from this interpreter's environment first."""
    beside = Path(sys.executable).parent / "nx-27017"
    found = str(beside) if beside.exists() else shutil.which("nx-27017")
    if not found:
        raise RuntimeError("nx-27017 is not installed: pip install -e '.[test]'")
    return found


class MongoWire:
    """An nx-27017 process on a free loopback port, with its data in ``directory``.

    It can be stopped and started again on the same port and data (failure tests).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=3000"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "nx.log", "ab")
        self.process = subprocess.Popen(
            [
                nx_27017_command(),
                # One SQLite file per database: with --db every database shares collections.
                "--data-dir",
                str(self.directory / "databases"),
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--log-file",
                str(self.directory / "nx-server.log"),
                "--pid-file",
                str(self.directory / "nx.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
