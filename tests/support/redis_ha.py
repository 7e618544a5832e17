"""Redis in its high-availability forms, from Debian's redis-server, on loopback ports.

``RedisCluster``: six servers in cluster mode (three primaries, each with one replica),
formed with ``redis-cli --cluster create``. ``RedisSentinel``: one primary, one replica and
three sentinels watching it under the name ``MASTER``. Each server keeps its files in a
directory of its own; every process is started here and stopped here, by its pid.

Cluster ports are chosen so that each one's bus port (port + 10000) stays below the
kernel's ephemeral range, where an outgoing connection could take it first.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

MASTER = "herald-primary"
# The cluster declares a node failed after this long without an answer; its replica then
# takes over. Short, so failover tests are quick; long enough for a loaded machine.
NODE_TIMEOUT_MS = 2000
START_TIMEOUT_S = 30.0


def redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(path).exists()), None
    )


def redis_cli() -> str | None:
    return shutil.which("redis-cli") or next(
        (path for path in ("/usr/bin/redis-cli", "/usr/local/bin/redis-cli") if Path(path).exists()), None
    )


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` ports from 20000-21999 whose port + 10000 is free too."""
    for _ in range(100):
        base = random.randrange(20_000, 22_000 - count)
        ports = list(range(base, base + count))
        if all(_free(port) and _free(port + 10_000) for port in ports):
            return ports
    raise RuntimeError("no free block of ports for a Redis Cluster")


def free_ports(count: int) -> list[int]:
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(22_000, 32_000)
        if port not in found and _free(port):
            found.append(port)
    return found


@dataclass
class Server:
    port: int
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = redis_server()
        if server is None:
            raise RuntimeError("redis-server is not installed (scripts/test installs Debian's redis-server)")
        with open(self.directory / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [server, *self.args], cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited: {self.log_tail()}")
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer in {START_TIMEOUT_S}s")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.directory / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _common(port: int) -> list[str]:
    # A replica syncs at once (the default waits 5 s for more replicas to share the transfer).
    return [
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"),
        *("--repl-diskless-sync-delay", "0"),
    ]


@dataclass
class RedisCluster:
    """Three primaries and three replicas on 127.0.0.1."""

    directory: Path
    servers: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        """What HERALD_REDIS_URL names in cluster mode: any node."""
        return f"redis://127.0.0.1:{self.servers[0].port}/0"

    def start(self) -> None:
        ports = cluster_ports(6)
        for port in ports:
            args = [
                *_common(port),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
            ]
            server = Server(port, self.directory / str(port), args)
            self.servers.append(server)
            server.start()
        cli = redis_cli()
        assert cli is not None
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]!r}{created.stderr!r}")
        self.wait_ok()

    def wait_ok(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every running node says the cluster is ok and agrees on three primaries, and
        every running replica's link to its primary is up: a replica that has not synced yet
        is never promoted (its data counts as too old), so a primary killed before that stays
        the slot's owner and the cluster stays down (seen once in a full suite on two busy
        cores: no failover in 60 s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                running = [server for server in self.servers if server.running]
                if all(self._ok(server) for server in running) and all(self._synced(s) for s in running):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the Redis Cluster is not ok after {timeout_s}s")

    @staticmethod
    def _ok(server: Server) -> bool:
        client = server.client()
        try:
            info = client.execute_command("CLUSTER", "INFO")
            if isinstance(info, str):
                info = dict(line.split(":", 1) for line in info.split() if ":" in line)
            state = {key: str(value) for key, value in dict(info).items()}
            return state.get("cluster_state") == "ok" and state.get("cluster_size") == "3"
        finally:
            client.close()

    @staticmethod
    def _synced(server: Server) -> bool:
        """A primary, or a replica whose replication link is up."""
        client = server.client()
        try:
            info = client.info("replication")
            return bool(info.get("role") == "master" or info.get("master_link_status") == "up")
        finally:
            client.close()

    def primary_of(self, key: str) -> Server:
        """The server holding ``key``'s slot as primary now, as the running nodes see it."""
        for server in self.servers:
            if not server.running:
                continue
            client = server.client()
            try:
                port = _owner_port(client, int(client.execute_command("CLUSTER", "KEYSLOT", key)))
                return next(candidate for candidate in self.servers if candidate.port == port)
            except redis.RedisError:
                continue
            finally:
                client.close()
        raise RuntimeError(f"no node knows who holds {key}")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def delete_matching(self, pattern: str) -> None:
        """Delete every key matching ``pattern`` on every primary, one key per command."""
        for server in self.servers:
            if not server.running:
                continue
            client = server.client()
            try:
                if client.execute_command("ROLE")[0] != "master":
                    continue
                keys = list(client.scan_iter(match=pattern, count=1000))
                for key in keys:
                    client.delete(key)
            finally:
                client.close()


def _owner_port(client: redis.Redis, slot: int) -> int:
    for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(primary[1])
    raise RuntimeError(f"slot {slot} is not served")


@dataclass
class RedisSentinel:
    """A primary, its replica and three sentinels watching it as ``MASTER``."""

    directory: Path
    primary: Server | None = None
    replica: Server | None = None
    sentinels: list[Server] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """What HERALD_REDIS_SENTINELS names."""
        return ",".join(f"127.0.0.1:{server.port}" for server in self.sentinels)

    def start(self) -> None:
        primary_port, replica_port, *sentinel_ports = free_ports(5)
        self.primary = Server(primary_port, self.directory / "primary", _common(primary_port))
        self.primary.start()
        self.replica = Server(
            replica_port,
            self.directory / "replica",
            [*_common(replica_port), "--replicaof", "127.0.0.1", str(primary_port)],
        )
        self.replica.start()
        for port in sentinel_ports:
            directory = self.directory / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            server = Server(port, directory, [str(config), "--sentinel"])
            self.sentinels.append(server)
            server.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            client = self.sentinels[0].client()
            try:
                found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                if found and int(found[1]) == primary_port:
                    return
            except redis.RedisError:
                pass
            finally:
                client.close()
            time.sleep(0.1)
        raise TimeoutError("the sentinels do not know the primary")

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server is not None:
                server.stop()

    def delete_matching(self, pattern: str) -> None:
        for server in (self.primary, self.replica):
            if server is None or not server.running:
                continue
            client = server.client()
            try:
                if client.execute_command("ROLE")[0] == "master":
                    for key in list(client.scan_iter(match=pattern, count=1000)):
                        client.delete(key)
            finally:
                client.close()
