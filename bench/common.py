"""What the benchmarks share: processes they start and always reap, a Herald cluster as OS
processes, /proc readings, a lean HTTP client, py-spy attachment, one JSON line per result.

Every process a benchmark starts gets a session (process group) of its own and is killed
with its group when the benchmark ends, however it ends. Loopback only.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import importlib.metadata
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from herald.core.settings import generate_secret  # noqa: E402
from tests.support.cleanup import drop_namespace  # noqa: E402
from tests.support.procs import free_port_block  # noqa: E402
from tests.support.servers import free_port, nx_27017_command, wait_for_port  # noqa: E402

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# Files one process may hold open on this machine (a hard limit): sockets count.
FILES_PER_PROCESS = 20_000
SOCKETS_PER_PROCESS = 15_000

PACKAGES = ("websockets", "uvloop", "aio-pika", "pymongo", "redis", "fastapi", "uvicorn", "orjson", "httpx", "nx-27017")


# Results ------------------------------------------------------------------------------
def emit(result: dict[str, Any]) -> None:
    """One JSON line per result on stdout; progress goes to stderr."""
    print(json.dumps(result), flush=True)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "p999": round(percentile(values, 99.9), 2),
        "max": round(max(values), 2) if values else float("nan"),
    }


def commit() -> str:
    """The commit measured: git's word, or the one a snapshot was made from (.bench-commit)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git = ["git", "-C", str(ROOT)]
        out = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "herald", "services"], capture_output=True)
        return out.stdout.decode().strip() + ("+dirty" if dirty.stdout.strip() else "")
    marker = ROOT / ".bench-commit"
    return marker.read_text().strip() if marker.exists() else "unknown"


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "commit": commit()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(total_kb / 1024 / 1024),
        "date": datetime.date.today().isoformat(),
    }


# /proc --------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    """Resident memory of a process (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process used so far (/proc/<pid>/stat utime+stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat): what everything on the machine used."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU seconds of some processes (and of the whole machine) between start() and stop()."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def start(self) -> CpuMeter:
        self.before = {name: cpu_s(pid) for name, pid in self.pids.items()}
        self.before["machine"] = machine_busy_s()
        self.wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        self.wall = time.monotonic() - self.wall
        now = {name: cpu_s(pid) for name, pid in self.pids.items()}
        now["machine"] = machine_busy_s()
        self.used = {name: round(now[name] - self.before[name], 2) for name in now}
        return self.used


def wait_quiet(pids: Sequence[int], below: float = 0.1, window_s: float = 1.0, max_s: float = 240.0) -> float:
    """Wait until the processes together use less than ``below`` of a core over a window
    (a push node reads every new connection's backlog after its welcome: that tail must be
    over before anything is measured). Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < max_s:
        before = sum(cpu_s(pid) for pid in pids)
        time.sleep(window_s)
        if sum(cpu_s(pid) for pid in pids) - before < below * window_s:
            break
    return round(time.monotonic() - started, 1)


# Processes ----------------------------------------------------------------------------
_STARTED: list[Proc] = []


class Proc:
    """A child process in a session of its own; ``stop`` ends its whole group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        pipes: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        output = open(log, "ab") if log is not None else subprocess.DEVNULL
        self.popen = subprocess.Popen(
            list(argv),
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            # Workers talk JSON lines on stdin/stdout; their stderr (progress, tracebacks) goes to the log.
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else output,
            stderr=output if (pipes or log is not None) else None,
            start_new_session=True,
        )
        if output is not subprocess.DEVNULL:
            output.close()
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its group (children included) goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        if self in _STARTED:
            _STARTED.remove(self)
        return self.popen.returncode

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def stop_all() -> None:
    for proc in reversed(list(_STARTED)):
        proc.stop(timeout_s=5)


def _on_signal(signum: int, _frame: Any) -> None:
    stop_all()
    sys.exit(128 + signum)


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_signal)


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / script), *args]


# A Herald cluster -----------------------------------------------------------------------
def namespace(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@dataclass
class Cluster:
    """Herald services as processes on RabbitMQ, Redis and the MongoDB-wire stand-in.

    ``roles`` lists the single-instance services to start (auth first); ``push`` push
    nodes follow, sharing one port (SO_REUSEPORT) when ``shared_port`` is set, else each
    on its own port.
    """

    prefix: str
    roles: Sequence[str] = ("auth", "collect", "dispatch")
    push: int = 1
    shared_port: bool = False
    env_extra: dict[str, str] = field(default_factory=dict)
    amqp: str = AMQP_URL
    redis: str = REDIS_URL
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="herald-bench-")))
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    push_ports: list[int] = field(default_factory=list)
    node_ids: list[str] = field(default_factory=list)
    api_key: str = ""
    app_id: str = ""

    def __post_init__(self) -> None:
        self.namespace = namespace(self.prefix)
        self.admin_token = generate_secret()
        self.service_token = generate_secret()
        self.mongo_port = free_port()

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?serverSelectionTimeoutMS=3000"

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port in sorted(set(self.push_ports))]

    @property
    def push_pids(self) -> list[int]:
        return [self.procs[node].pid for node in self.node_ids]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def service_pids(self) -> dict[str, int]:
        """Herald's processes (every one but the store stand-in), by name."""
        return {name: pid for name, pid in self.pids().items() if name != "mongo"}

    def env(self) -> dict[str, str]:
        return {
            "HERALD_NAMESPACE": self.namespace,
            "HERALD_AMQP_URL": self.amqp,
            "HERALD_REDIS_URL": self.redis,
            "HERALD_MONGO_URL": self.mongo_url,
            "HERALD_ADMIN_TOKEN": self.admin_token,
            "HERALD_SERVICE_TOKEN": self.service_token,
            "HERALD_LOG_LEVEL": "WARNING",
            "HERALD_DRAIN_S": "2",
            # The services run the code of the tree this benchmark lives in.
            "PYTHONPATH": str(ROOT),
            **self.env_extra,
        }

    def start(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        mongo_dir = self.workdir / "mongo"
        mongo_dir.mkdir(parents=True, exist_ok=True)
        self.procs["mongo"] = Proc(
            "mongo",
            [
                nx_27017_command(),
                "--data-dir",
                str(mongo_dir / "databases"),
                "--host",
                "127.0.0.1",
                "-p",
                str(self.mongo_port),
                "--log-file",
                str(mongo_dir / "nx-server.log"),
                # Its own pid file: with the default one, a second stand-in refuses to start.
                "--pid-file",
                str(mongo_dir / "nx.pid"),
            ],
            log=mongo_dir / "nx.log",
        )
        wait_for_port(self.mongo_port)
        base = free_port_block(len(self.roles) + 2 * self.push)
        for index, role in enumerate(self.roles):
            self.ports[role] = base + 1 + index
        self.ports.setdefault("auth", 0)
        if self.shared_port:
            self.push_ports = [base + 1 + len(self.roles)] * self.push
        else:
            self.push_ports = [base + 1 + len(self.roles) + i for i in range(self.push)]
        self.node_ids = [f"bench-push-{i + 1}" for i in range(self.push)]
        env = {**self.env(), "HERALD_AUTH_URL": self.url("auth") if "auth" in self.roles else ""}
        for role in self.roles:
            self._service(role, role, {**env, "HERALD_PORT": str(self.ports[role])}, self.ports[role])
            if role == "auth":
                self._create_app()
        for node_id, port in zip(self.node_ids, self.push_ports, strict=True):
            node_env = {**env, "HERALD_PORT": str(port), "HERALD_NODE_ID": node_id}
            if self.shared_port:
                node_env["HERALD_REUSE_PORT"] = "1"
            self._service(node_id, "push", node_env, port)
        return self

    def _service(self, name: str, role: str, env: dict[str, str], port: int, timeout_s: float = 30.0) -> None:
        log = self.workdir / f"{name}.log"
        proc = self.procs[name] = Proc(name, [sys.executable, "-m", "herald.services.cli", role], env=env, log=log)
        deadline = time.monotonic() + timeout_s
        # Each service says so on stderr once every part started (with a shared port,
        # /healthz could answer from a sibling).
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            if f"herald {role} listening" in log.read_text(errors="replace"):
                wait_for_port(port)
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not started after {timeout_s}s:\n{proc.log_tail()}")

    def _create_app(self) -> None:
        async def create() -> dict[str, Any]:
            async with RawHttp("127.0.0.1", self.ports["auth"], self.admin_token, size=1) as http:
                status, body = await http.request("POST", "/v1/apps", {"name": "bench"})
                if status != 201:
                    raise RuntimeError(f"creating the bench app: {status} {body!r}")
                return body

        app = asyncio.run(create())
        self.api_key, self.app_id = app["api_key"], app["app_id"]

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        asyncio.run(
            drop_namespace(self.namespace, amqp_url=self.amqp, redis_url=self.redis, mongo_url="mongodb://127.0.0.1:1")
        )

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()


# A lean HTTP/1.1 client ----------------------------------------------------------------
@contextlib.contextmanager
def herald_dev(workdir: Path, env: dict[str, str] | None = None) -> Iterator[tuple[int, int, str]]:
    """``herald dev`` on a free block of ports with its data in ``workdir``, and nothing
    external (HERALD_*_URL emptied): its pid, the port base and the demo app's API key,
    once the demo app exists and the push port answers. Stopped on exit."""
    port_base = free_port_block(5)
    data = workdir / "herald-dev"
    settings = {
        "HERALD_DATA_DIR": str(data),
        "HERALD_LOG_LEVEL": "WARNING",
        "HERALD_AMQP_URL": "",
        "HERALD_REDIS_URL": "",
        "HERALD_MONGO_URL": "",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "herald.services.cli", "dev", "--port-base", str(port_base)]
    proc = Proc("herald-dev", argv, env=settings, log=workdir / "herald-dev.log")
    try:
        demo_file = data / "demo-app.json"
        deadline = time.monotonic() + 60
        while not demo_file.exists():
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"herald dev did not start:\n{proc.log_tail()}")
            time.sleep(0.1)
        wait_for_port(port_base + 4)
        yield proc.pid, port_base, json.loads(demo_file.read_text())["api_key"]
    finally:
        proc.stop()


class RawHttp:
    """Keep-alive HTTP/1.1 over a pool of asyncio streams: JSON in, JSON out.

    A load generator shares the two cores with what it measures, so it must cost little:
    this one spends a fraction of what httpx does per request. It speaks only what the
    benchmarks need (Content-Length bodies, no chunking, no redirects).
    """

    def __init__(self, host: str, port: int, bearer: str, size: int = 16, timeout_s: float = 30.0) -> None:
        self._host, self._port = host, port
        self._head = f"Host: {host}:{port}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\n"
        self._size = size
        self._timeout = timeout_s
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._opened = 0
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawHttp:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        for writer in self._all:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._opened < self._size:
            self._opened += 1
            reader, writer = await asyncio.open_connection(self._host, self._port, limit=2**24)
            self._all.append(writer)
            return reader, writer
        return await self._idle.get()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        payload = orjson.dumps(body) if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\n{self._head}Content-Length: {len(payload)}\r\n\r\n".encode()
        reader, writer = await self._take()
        try:
            async with asyncio.timeout(self._timeout):
                writer.write(head + payload)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionError("server closed the connection")
                status = int(status_line.split(b" ", 2)[1])
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                raw = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            self._all.remove(writer)
            self._opened -= 1
            raise
        self._idle.put_nowait((reader, writer))
        return status, orjson.loads(raw) if raw else None


async def mint_tokens(auth_port: int, api_key: str, users: Sequence[str], concurrency: int = 32) -> list[str]:
    """One connect token per user through auth's API (POST /v1/tokens), many in flight."""
    tokens: list[str] = [""] * len(users)
    next_index = iter(range(len(users)))
    async with RawHttp("127.0.0.1", auth_port, api_key, size=concurrency) as http:

        async def worker() -> None:
            for index in next_index:
                status, body = await http.request("POST", "/v1/tokens", {"user_id": users[index]})
                if status != 201:
                    raise RuntimeError(f"token for {users[index]}: {status} {body!r}")
                tokens[index] = body["token"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


async def join_group(collect_port: int, api_key: str, group: str, users: Sequence[str], concurrency: int = 32) -> None:
    """PUT every user into the group through collect, many in flight."""
    next_user = iter(users)
    async with RawHttp("127.0.0.1", collect_port, api_key, size=concurrency) as http:

        async def worker() -> None:
            for user in next_user:
                status, body = await http.request("PUT", f"/v1/groups/{group}/members/{user}")
                if status != 200:
                    raise RuntimeError(f"joining {user} to {group}: {status} {body!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


# Source addresses ----------------------------------------------------------------------
def source_addresses(count: int) -> list[str]:
    """Loopback source addresses of our own, past the ephemeral-port limit of one address.

    A random 127.x.y.0/24 per run: sockets of an earlier run lingering in TIME_WAIT on
    some address cannot take the ports this run needs.
    """
    prefix = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}"
    return [f"{prefix}.{i + 1}" for i in range(count)]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# Profiling ----------------------------------------------------------------------------
class Profiler:
    """py-spy attached to running processes, writing collapsed stacks (flame-graph data),
    and ``perf`` beside it where it is installed.

    py-spy samples wall-clock time of the Python stacks: a process that is runnable but
    waiting for a core (two cores shared with the load) is sampled where it stopped, often
    right after a system call that woke another process. ``perf`` samples CPU time only,
    the kernel's included, so it says how much of a process's CPU is the interpreter, the
    kernel (system calls, loopback TCP) and each compiled library. ``summarise`` and
    ``perf_summary`` turn both into one summary line per process.
    """

    def __init__(self, directory: Path | None) -> None:
        if directory is not None and not (Path(sys.executable).parent / "py-spy").exists():
            # Found out here rather than after the servers are up and the load has begun.
            raise SystemExit("--profile needs py-spy in this venv: pip install py-spy (scripts/bench does)")
        self.directory = directory
        self._procs: list[tuple[str, Proc, Path, Proc | None, Path]] = []

    def attach(self, name: str, pid: int, seconds: float, rate: int = 100) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{name}.txt"
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
        argv += ["--duration", str(max(1, int(seconds))), "--nonblocking", "-o", str(out)]
        spy = Proc(f"py-spy-{name}", argv, log=self.directory / f"{name}.py-spy.log")
        perf_out = self.directory / f"{name}.perf"
        perf = None
        if shutil.which("perf"):
            perf_argv = ["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", str(perf_out)]
            perf_argv += ["--", "sleep", str(max(1, int(seconds)))]
            perf = Proc(f"perf-{name}", perf_argv, log=self.directory / f"{name}.perf.log")
        self._procs.append((name, spy, out, perf, perf_out))

    def finish(self, now: bool = False) -> list[dict[str, Any]]:
        """One summary per profiled process: after the recorders' ``--duration``, or at once
        (``now``: SIGINT, on which py-spy and perf write what they sampled so far)."""
        results = []
        for name, spy, out, perf, perf_out in self._procs:
            for proc in (spy, perf):
                if proc is None:
                    continue
                if now and proc.alive():
                    with contextlib.suppress(ProcessLookupError):
                        proc.popen.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=120)
                proc.stop(timeout_s=5)
            summary: dict[str, Any] = {"metric": "profile", "process": name}
            if out.exists():
                summary |= {"file": str(out), **summarise(out)}
            if perf is not None and perf_out.exists():
                summary |= {"perf_file": str(perf_out), **perf_summary(perf_out)}
            if len(summary) > 2:
                results.append(summary)
        self._procs.clear()
        return results


def perf_summary(recorded: Path, top: int = 8) -> dict[str, Any]:
    """CPU samples by object (the interpreter, the kernel, each compiled extension) and the
    hottest kernel symbols, from ``perf report``."""
    report = ["perf", "report", "-i", str(recorded), "--stdio", "--no-children", "-g", "none"]
    shares: dict[str, list[list[Any]]] = {}
    for key, sort in (("perf_by_object", "dso"), ("perf_kernel_symbols", "dso,sym")):
        done = subprocess.run([*report, "--sort", sort], capture_output=True, text=True, timeout=300, check=False)
        rows = []
        for line in done.stdout.splitlines():
            parts = line.split()
            if not parts or not parts[0].endswith("%") or line.lstrip().startswith("#"):
                continue
            name = " ".join(parts[1:])
            if key == "perf_kernel_symbols" and "[kernel" not in name:
                continue
            rows.append([name.replace("[kernel.kallsyms] ", "").replace("[k] ", ""), float(parts[0].rstrip("%"))])
        shares[key] = rows[:top]
    return shares


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep function and file.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


# Frames every sample of a service carries (interpreter start-up, the event loop's run):
# left out of the inclusive ranking, where they would only say "100 %".
_ROOT_FRAMES = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "uvloop/__init__.py",
    "services/cli.py",
    "herald/ops/runtime.py",
)


def _package(frame: str) -> str:
    """Who a frame's code belongs to: ``herald`` (herald/ and services/), a library's
    top-level package, or ``stdlib:<module>``."""
    path = frame.rpartition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    name = top.removesuffix(".py")
    if top in ("herald", "services"):
        return "herald"
    if path.startswith("<") or name in sys.stdlib_module_names:
        return f"stdlib:{name}"
    return name


def summarise(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Top functions of a collapsed-stack file (py-spy ``--format raw``, idle time left out):
    own (leaf) share, inclusive share, and inclusive share of Herald's own functions."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    packages: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        package = _package(frames[-1])
        packages[package] = packages.get(package, 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count

    def ranked(table: dict[str, int], keep: Any = lambda _name: True) -> list[list[Any]]:
        rows = sorted(((n, c) for n, c in table.items() if keep(n)), key=lambda kv: -kv[1])[:top]
        return [[name, round(100 * n / total, 1)] for name, n in rows]

    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "own": ranked(own),
        "inclusive": ranked(inclusive, lambda n: not any(root in n for root in _ROOT_FRAMES)),
        "by_package": ranked(packages),
        "herald": ranked(
            inclusive,
            lambda n: ("(herald/" in n or "(services/" in n) and not any(root in n for root in _ROOT_FRAMES),
        ),
    }


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A directory for the run's logs and the store's files: removed after a run that
    succeeded, kept (and named on stderr) after one that failed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException:
        progress(f"logs kept in {path}")
        raise
    stop_all()
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """A run that exceeds its bound stops with a clear error, and its processes are reaped."""

    def expired(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"{what} took longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class StoreCommands:
    """The MongoDB commands (and the documents they write) each service sent during a window.

    The services must have been started with ``env()`` in their environment (the hook in
    ``bench/hooks``); ``start(pids)`` opens the window, ``stop(per)`` closes it with the
    counts per service, in total and per ``per`` operations.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._pids: dict[str, int] = {}
        self._before: dict[str, dict[str, list[int]]] = {}

    def env(self) -> dict[str, str]:
        return {
            "HERALD_BENCH_STORE_COMMANDS": str(self.directory),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench" / "hooks")]),
        }

    def start(self, pids: dict[str, int]) -> None:
        self._pids = dict(pids)
        self._before = self._take()

    def stop(self, per: int) -> dict[str, dict[str, Any]]:
        after = self._take()
        result: dict[str, dict[str, Any]] = {}
        for name, now in after.items():
            then = self._before.get(name, {})
            deltas = {
                key: [count - then.get(key, [0, 0])[0], docs - then.get(key, [0, 0])[1]]
                for key, (count, docs) in now.items()
            }
            deltas = {key: value for key, value in deltas.items() if value[0]}
            if not deltas:
                continue
            commands = sum(value[0] for value in deltas.values())
            documents = sum(value[1] for value in deltas.values())
            result[name] = {
                "commands": commands,
                "documents": documents,
                "commands_per_op": round(commands / max(1, per), 3),
                "documents_per_op": round(documents / max(1, per), 3),
                "by_command": dict(sorted(deltas.items(), key=lambda item: -item[1][0])),
            }
        return result

    def _take(self, timeout_s: float = 5.0) -> dict[str, dict[str, list[int]]]:
        """Each service's totals so far (written by the service on SIGUSR2)."""
        totals: dict[str, dict[str, list[int]]] = {}
        for name, pid in self._pids.items():
            path = self.directory / f"{pid}.json"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + timeout_s
            while not path.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not write its store command counts")
                time.sleep(0.02)
            totals[name] = json.loads(path.read_text())
        return totals
