"""docker-compose.yml as plain processes: the file's commands, environment and health checks,
run on this machine, so the file is exercised by every test run and cannot rot.

How the file maps to processes:

- A Herald service (``build: .``) runs the Dockerfile's ENTRYPOINT with the service's
  ``command`` (``.venv/bin/herald auth``), with the Dockerfile's ENV then the service's
  ``environment`` (after ``${VAR...}`` interpolation from the test's variables) and only
  PATH, HOME and LANG from this machine, as in a container.
- Each container listens on its own network address; here every process shares 127.0.0.1,
  so each gets a free port: ``HERALD_PORT`` becomes it, ``HERALD_HOST`` becomes 127.0.0.1,
  and every URL naming a compose service (``http://auth:8001``) is rewritten to that
  service's process. RabbitMQ and Redis URLs point at the test servers; the MongoDB URL is
  the harness's (nx-27017 has no replica set, so ``replicaSet=rs0`` cannot be kept).
  ``HERALD_NAMESPACE`` is the test's own, so runs never collide on the shared servers.
- nginx runs Debian's binary on a temporary copy of the config file the compose file
  mounts at /etc/nginx/nginx.conf, with its ``listen`` port, its upstream servers
  (``push-1:8004``) and any ``service:port`` rewritten the same way, and the
  ``resolve`` parameter dropped (Docker's DNS does not exist here).
- ``depends_on`` orders the start: a service starts when what it depends on is healthy,
  and healthy means its compose health check command, run with the service's environment
  (``python`` is this venv's; ``127.0.0.1`` is the process's own port), exits 0.
- Stopping is SIGTERM in reverse order, bounded by ``stop_grace_period``, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Run by the test's servers (fixtures), not by the twin.
SERVERS = ("rabbitmq", "redis", "mongo")
# The compose file's server credentials (${VAR:?}): required to read it, unused by the twin.
SERVER_CREDENTIALS = (
    "HERALD_RABBITMQ_USER",
    "HERALD_RABBITMQ_PASSWORD",
    "HERALD_REDIS_PASSWORD",
    "HERALD_MONGO_USER",
    "HERALD_MONGO_PASSWORD",
)
NGINX_CONFIG_TARGET = "/etc/nginx/nginx.conf"
HEALTHY_WITHIN_S = 30.0
POLL_S = 0.15

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_SERVICE_ADDRESS = re.compile(r"(?<![\w.-])(?P<host>[a-z][a-z0-9_-]*):(?P<port>\d{1,5})\b")
# The container's own address in a health check; not when the port comes from a variable.
_LOCAL_URL = re.compile(r"(?P<scheme>https?)://(?:127\.0\.0\.1|localhost)(?::(?P<port>\d+))?(?![:\d])")


class ComposeError(Exception):
    """The compose file cannot be run as written (a missing variable, an unknown host)."""


# --- reading the files -------------------------------------------------------------------


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        value, op, arg = variables.get(name), match["op"], match["arg"] or ""
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if empty else str(value)
        if op in ("?", ":?"):
            if empty:
                raise ComposeError(f"{name}: {arg or 'required'}")
            return str(value)
        if op in ("+", ":+"):
            return "" if empty else arg
        return "" if value is None else str(value)

    return _VARIABLE.sub(replace, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, variables) for value in node]
    return node


def load_compose(variables: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with its anchors merged and its variables interpolated."""
    return _interpolate_tree(yaml.safe_load(path.read_text()), variables)


def raw_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file with anchors merged and ``${...}`` left as written."""
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class Image:
    """What the Dockerfile gives every container built from it."""

    entrypoint: list[str]
    env: dict[str, str]


def read_dockerfile(path: Path = DOCKERFILE) -> Image:
    entrypoint: list[str] = []
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word.upper() == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return Image(entrypoint, env)


def environment(spec: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either of compose's two forms, as strings."""
    raw = spec.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: _scalar(value) for key, value in raw.items()}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def depends_on(spec: Mapping[str, Any]) -> dict[str, str]:
    """``{dependency: condition}``; the short list form means ``service_started``."""
    raw = spec.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (value or {}).get("condition", "service_started") for name, value in raw.items()}


def healthcheck_argv(spec: Mapping[str, Any]) -> list[str] | None:
    test = (spec.get("healthcheck") or {}).get("test")
    if not test or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    raise ComposeError(f"unknown healthcheck form {test!r}")


def duration_s(text: str | None, default: float) -> float:
    """Compose durations: ``20s``, ``1m30s``, ``500ms``."""
    if not text:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    return sum(float(number) * units[unit] for number, unit in parts) or default


def is_herald(spec: Mapping[str, Any]) -> bool:
    """Built from this repository's Dockerfile."""
    return "build" in spec


def nginx_config_source(spec: Mapping[str, Any], base: Path = ROOT) -> Path | None:
    """The host file a service mounts as nginx's main configuration."""
    for volume in spec.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == NGINX_CONFIG_TARGET:
            return (base / source).resolve()
    return None


def container_ports(spec: Mapping[str, Any]) -> list[int]:
    """The container side of ``ports`` (``"8000:80"`` -> 80)."""
    found = []
    for port in spec.get("ports") or []:
        found.append(int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return found


def start_order(services: Mapping[str, Mapping[str, Any]], skip: tuple[str, ...] = SERVERS) -> list[list[str]]:
    """Services in levels: each level depends only on earlier ones (or on skipped servers)."""
    pending = {name: set(depends_on(spec)) - set(skip) for name, spec in services.items() if name not in skip}
    levels: list[list[str]] = []
    done: set[str] = set()
    while pending:
        ready = sorted(name for name, needs in pending.items() if needs <= done)
        if not ready:
            raise ComposeError(f"depends_on has a cycle or an unknown service among {sorted(pending)}")
        levels.append(ready)
        done.update(ready)
        for name in ready:
            del pending[name]
    return levels


# --- rewriting for one machine -----------------------------------------------------------


@dataclass
class Addresses:
    """Where each compose ``service:port`` lives in the twin."""

    compose_services: set[str]
    endpoints: dict[str, str]  # "auth:8001" -> "127.0.0.1:43121"; "rabbitmq:5672" -> fixture netloc
    engines: frozenset[str] = frozenset(SERVERS)  # run by the test's fixtures, with their credentials

    def netloc(self, host: str, port: int) -> str:
        key = f"{host}:{port}"
        if key not in self.endpoints:
            raise ComposeError(f"{key} names a compose service, but nothing there listens on {port}")
        return self.endpoints[key]

    def rewrite_text(self, text: str) -> str:
        """Every ``service:port`` in free text (an nginx config)."""

        def replace(match: re.Match[str]) -> str:
            if match["host"] not in self.compose_services:
                return match[0]
            return self.netloc(match["host"], int(match["port"]))

        return _SERVICE_ADDRESS.sub(replace, text)

    def rewrite_url(self, value: str) -> str:
        """A URL whose host is a compose service: its netloc becomes the twin's. For the
        servers (RabbitMQ, Redis, MongoDB) the test's own credentials replace the compose
        file's: the twin's servers are the test's, which know nothing of the file's users."""
        if "://" not in value:
            return value
        parts = urlsplit(value)
        if parts.hostname not in self.compose_services:
            if parts.hostname and "." not in parts.hostname and parts.hostname != "localhost":
                raise ComposeError(f"{value}: {parts.hostname} is not a service of the compose file")
            return value
        netloc = self.netloc(parts.hostname, parts.port or _default_port(parts.scheme))
        if parts.hostname not in self.engines and "@" not in netloc and parts.username is not None:
            netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))


def _default_port(scheme: str) -> int:
    return {"http": 80, "https": 443, "amqp": 5672, "redis": 6379, "mongodb": 27017}.get(scheme, 0)


def server_netloc(url: str) -> str:
    """host:port of a test server URL, with its credentials if it has any."""
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port or _default_port(parts.scheme)}"
    if parts.username is not None:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
    return netloc


def rewrite_nginx_config(text: str, addresses: Addresses, listen_ports: Mapping[int, int], temp: Path) -> str:
    """The config for a process on this machine: upstreams and ``listen`` moved, ``resolve``
    dropped, temporary files under ``temp``."""
    text = addresses.rewrite_text(text)
    text = re.sub(r"(\bserver[ \t]+\S+?)((?:[ \t]+[\w=]+)*?)[ \t]+resolve\b", r"\1\2", text)

    def listen(match: re.Match[str]) -> str:
        port = int(match["port"])
        if port not in listen_ports:
            raise ComposeError(f"nginx listens on {port}, which the compose file does not publish")
        return f"{match['head']}127.0.0.1:{listen_ports[port]}"

    text = re.sub(r"(?P<head>\blisten\s+)(?P<port>\d+)\b", listen, text)
    temps = "".join(
        f"    {kind}_temp_path {temp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return re.sub(r"^http\s*\{\n", lambda match: match[0] + temps, text, count=1, flags=re.M)


# --- the processes -----------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    """What a container has without being told: a PATH, a HOME, a locale."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin") + ":/usr/sbin:/sbin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def venv_bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / name)


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health: list[str] | None
    health_timeout_s: float
    grace_s: float
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    healthy_once: bool = False

    def start(self) -> None:
        self.healthy_once = False
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        """The compose health check, run now with this service's environment."""
        if self.health is None:
            return self.running
        try:
            done = subprocess.run(self.health, env=self.env, capture_output=True, timeout=self.health_timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def check_healthy(self) -> bool:
        """One step of waiting for health: False while starting, raises if the process died.
        The health check command runs once the port accepts connections (spawning it every
        poll before that would only slow the start down)."""
        if not self.running:
            code = self.process.returncode if self.process else None
            raise ComposeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
        if not self.healthy_once and _port_open(self.port) and self.healthy():
            self.healthy_once = True
        return self.healthy_once

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> int | None:
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Servers:
    amqp_url: str
    redis_url: str
    mongo_url: str


class Twin:
    """The compose file's services other than the servers, as processes on 127.0.0.1."""

    def __init__(
        self,
        compose: dict[str, Any],
        image: Image,
        servers: Servers,
        namespace: str,
        ports: dict[str, int],
        directory: Path,
        nginx: str,
    ) -> None:
        self.compose = compose
        self.services: dict[str, dict[str, Any]] = compose["services"]
        self.image = image
        self.servers = servers
        self.namespace = namespace
        self.ports = ports  # twin service -> its port on 127.0.0.1
        self.directory = directory
        self.nginx = nginx
        self.addresses = self._addresses()
        self.procs: dict[str, Proc] = {name: self._proc(name) for level in self.levels for name in level}

    @property
    def levels(self) -> list[list[str]]:
        return start_order(self.services)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _container_port(self, name: str) -> int:
        spec = self.services[name]
        if is_herald(spec):
            return int(environment(spec)["HERALD_PORT"])
        return container_ports(spec)[0]

    def _addresses(self) -> Addresses:
        endpoints = {
            "rabbitmq:5672": server_netloc(self.servers.amqp_url),
            "redis:6379": server_netloc(self.servers.redis_url),
            "mongo:27017": server_netloc(self.servers.mongo_url),
        }
        for name in self.ports:
            endpoints[f"{name}:{self._container_port(name)}"] = f"127.0.0.1:{self.ports[name]}"
        return Addresses(set(self.services), endpoints)

    def service_env(self, name: str) -> dict[str, str]:
        spec = self.services[name]
        env = {**self.image.env, **environment(spec)} if is_herald(spec) else environment(spec)
        for key, value in env.items():
            if key == "HERALD_PORT":
                env[key] = str(self.ports[name])
            elif key == "HERALD_HOST":
                env[key] = "127.0.0.1"
            elif key == "HERALD_NAMESPACE":
                env[key] = self.namespace
            elif key == "HERALD_MONGO_URL":
                self.addresses.rewrite_url(value)  # still checks that it names the mongo service
                env[key] = self.servers.mongo_url
            else:
                env[key] = self.addresses.rewrite_url(value)
        return {**_base_env(), **env}

    def _health(self, name: str, port: int) -> list[str] | None:
        """The service's health check as run inside its container: ``python`` is this venv's,
        and its own address (127.0.0.1 or localhost) is its process's port."""
        argv = healthcheck_argv(self.services[name])
        if argv is None:
            return None
        if argv[0] == "python":
            argv[0] = venv_bin("python")
        inside = self._container_port(name)

        def local(match: re.Match[str]) -> str:
            given = int(match["port"] or _default_port(match["scheme"]))
            if given != inside:
                raise ComposeError(f"{name}'s health check calls port {given}; the service listens on {inside}")
            return f"{match['scheme']}://127.0.0.1:{port}"

        return [_LOCAL_URL.sub(local, part) for part in argv]

    def _proc(self, name: str) -> Proc:
        spec = self.services[name]
        check = spec.get("healthcheck") or {}
        common = {
            "log_path": self.directory / f"{name}.log",
            "health": self._health(name, self.ports[name]),
            "health_timeout_s": duration_s(check.get("timeout"), 30.0),
            "grace_s": duration_s(spec.get("stop_grace_period"), 10.0),
            "port": self.ports[name],
        }
        if is_herald(spec):
            entrypoint = [venv_bin(self.image.entrypoint[0]), *self.image.entrypoint[1:]]
            return Proc(name, [*entrypoint, *spec["command"]], self.service_env(name), **common)
        source = nginx_config_source(spec)
        if source is None:
            raise ComposeError(f"the twin runs Herald services and nginx; {name} is neither")
        return Proc(name, self._nginx_argv(name, source), _base_env(), **common)

    def _nginx_argv(self, name: str, source: Path) -> list[str]:
        home = self.directory / name
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (home / kind).mkdir(parents=True, exist_ok=True)
        listen = {port: self.ports[name] for port in container_ports(self.services[name])}
        config = home / "nginx.conf"
        config.write_text(rewrite_nginx_config(source.read_text(), self.addresses, listen, home))
        return [
            self.nginx,
            "-p",
            str(home),
            "-c",
            str(config),
            "-e",
            str(home / "error.log"),
            "-g",
            f"daemon off; pid {home / 'nginx.pid'};",
        ]

    def start(self, names: list[str] | None = None) -> None:
        """Start ``names`` (default: every service) as compose does: each once what it
        depends on is healthy (``service_healthy``) or started; return when all are healthy."""
        pending = [name for level in self.levels for name in level if names is None or name in names]
        starting: list[str] = []
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while pending or starting:
            for name in list(pending):
                if all(self._satisfied(dependency, condition) for dependency, condition in self._needs(name)):
                    self.procs[name].start()
                    pending.remove(name)
                    starting.append(name)
            for name in list(starting):
                if self.procs[name].check_healthy():
                    starting.remove(name)
            if time.monotonic() > deadline:
                stuck = starting or pending
                raise ComposeError(f"not healthy after {HEALTHY_WITHIN_S}s: {stuck}\n{self.logs()}")
            time.sleep(POLL_S)

    def _needs(self, name: str) -> list[tuple[str, str]]:
        return [(dep, condition) for dep, condition in depends_on(self.services[name]).items() if dep in self.procs]

    def _satisfied(self, name: str, condition: str) -> bool:
        proc = self.procs[name]
        if condition == "service_healthy":
            return proc.running and proc.healthy_once
        return proc.running

    def stop(self, names: list[str] | None = None) -> dict[str, int | None]:
        """SIGTERM in reverse start order, level by level; each level's exit codes."""
        codes: dict[str, int | None] = {}
        for level in reversed(self.levels):
            chosen = [name for name in level if (names is None or name in names) and self.procs[name].process]
            for name in chosen:
                self.procs[name].terminate()
            for name in chosen:
                codes[name] = self.procs[name].wait_stopped()
                self.procs[name].process = None
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{proc.log_tail(15)}" for name, proc in self.procs.items())
