"""A RabbitMQ cluster of three nodes on 127.0.0.1, from the Debian package, for fault tests.

The machine's own broker (rabbit@localhost, port 5672, configured in /etc/rabbitmq) is
never touched. Each node here has its own node name, its own configuration file (the
system one pins the listener to 5672; ``RABBITMQ_CONFIG_FILE`` replaces it), its own
environment file, plugins file, data and log directories (owned by the ``rabbitmq`` user,
as the server runs as that user) and its own distribution port. The nodes share the
``rabbitmq`` user's Erlang cookie, so ``rabbitmqctl join_cluster`` makes them one cluster.

The process started is the Erlang VM itself (``RUNNING_UNDER_SYSTEMD`` makes the start
script exec it), so its pid is the node's: ``stop`` is a SIGTERM (a clean shutdown),
``kill`` a SIGKILL (a crash).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.redis_ha import free_ports

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"
USER = "rabbitmq"
HOME = "/var/lib/rabbitmq"  # where the rabbitmq user's Erlang cookie is
BOOT_TIMEOUT_S = 120.0


def available() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if not Path(SERVER).exists():
        return "rabbitmq-server is not installed (scripts/test installs Debian's rabbitmq-server)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "there is no rabbitmq user"
    if os.geteuid() != 0:
        return "starting RabbitMQ nodes as the rabbitmq user needs root"
    return None


@dataclass
class RabbitNode:
    name: str  # short: herald-xxxx-1
    port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        base = self.directory
        return {
            "PATH": "/usr/lib/rabbitmq/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": HOME,
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RUNNING_UNDER_SYSTEMD": "1",
        }

    def prepare(self) -> None:
        base = self.directory
        shutil.rmtree(base, ignore_errors=True)
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(parents=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # guest may log in over 127.0.0.1 only by default; that is all these nodes listen on.
            "loopback_users.guest = true\n"
            # A node that lost its peers keeps serving what it can (the default, explicit).
            "cluster_partition_handling = ignore\n"
        )
        (base / "rabbitmq-env.conf").write_text("")
        (base / "enabled_plugins").write_text("[].\n")
        owner = pwd.getpwnam(USER)
        for path in [base, *base.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        with open(self.directory / "console.log", "ab") as log:
            self.process = subprocess.Popen(
                [SERVER],
                env=self._env(),
                user=USER,
                group=USER,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ctl(self, *args: str, timeout_s: float = 60.0, tool: str = CTL) -> str:
        done = subprocess.run(
            [tool, "-n", self.node, *args],
            env=self._env(),
            user=USER,
            group=USER,
            cwd=HOME,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} on {self.node}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def await_startup(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.node} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self.ctl("await_startup", "--timeout", "10", timeout_s=30)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.node} did not boot in {BOOT_TIMEOUT_S}s: {self.log_tail()}") from None
                time.sleep(0.5)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> None:
        """A clean shutdown (SIGTERM), as an operator stopping the node."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: the node dies without telling anyone."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.directory / "console.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class RabbitCluster:
    # Under /tmp with a traversable path: the nodes run as the rabbitmq user, who cannot
    # enter pytest's own temporary directories (mode 0700, owned by root).
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="herald-rabbitmq-", dir="/tmp")))
    size: int = 3
    nodes: list[RabbitNode] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def amqp_url(self, first: RabbitNode | None = None) -> str:
        """HERALD_AMQP_URL naming every node, ``first`` first."""
        ordered = sorted(self.nodes, key=lambda node: node is not first)
        return ",".join(node.url for node in ordered)

    def start(self) -> None:
        tag = secrets.token_hex(3)
        self.directory.chmod(0o755)
        ports = free_ports(self.size * 2)
        self.nodes = [
            RabbitNode(f"herald-{tag}-{index + 1}", ports[2 * index], ports[2 * index + 1], self.directory / str(index))
            for index in range(self.size)
        ]
        for node in self.nodes:
            node.prepare()
            node.start()
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: node.await_startup(), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while len(self.running_nodes(first)) < self.size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not form: {first.ctl('cluster_status')}")
            time.sleep(0.5)

    def running_nodes(self, asking: RabbitNode) -> list[str]:
        status = json.loads(asking.ctl("cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def leader_of(self, queue: str) -> RabbitNode:
        """The node leading a quorum queue now, asked of any running node."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                rows = json.loads(node.ctl("list_queues", "name", "leader", "--formatter", "json"))
            except RuntimeError:
                continue
            for row in rows:
                if row.get("name") == queue:
                    return next(candidate for candidate in self.nodes if candidate.node == row["leader"])
        raise RuntimeError(f"no running node knows the leader of {queue}")

    def start_stopped_nodes(self) -> None:
        """Bring back the nodes a test stopped or killed, and wait until they have booted."""
        stopped = [node for node in self.nodes if not node.running]
        for node in stopped:
            node.start()
        for node in stopped:
            node.await_startup()

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))
        shutil.rmtree(self.directory, ignore_errors=True)
