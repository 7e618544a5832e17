"""deploy/docker-compose.ha.yml's Herald half as processes (``tests.compose.twin`` for it).

The engines of the file (three RabbitMQ nodes, six Redis nodes and their one-shot
``redis-cluster`` init, three MongoDB members) are not run by the twin: each name maps to
what this machine has. Every ``rabbitmq-N`` is the test broker (quorum queues work on one
node), the six ``redis-N`` are the six nodes of a Redis Cluster the tests started (so
HERALD_REDIS_MODE=cluster is exercised for real), and the MongoDB URL (three members and a
replica set) becomes the harness's MongoDB-wire server, which has no replica set. The
Herald services and nginx run with the file's commands, environment and health checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.compose.twin import (
    Addresses,
    ComposeError,
    Image,
    Servers,
    Twin,
    _base_env,
    environment,
    is_herald,
    server_netloc,
    start_order,
)

HA_FILE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.ha.yml"


def _from_root(volume: str) -> str:
    if volume.startswith("./"):
        return str(HA_FILE.parent.relative_to(HA_FILE.parents[1]) / volume[2:])
    return volume


def engines(services: Mapping[str, Any]) -> tuple[str, ...]:
    """The services the twin does not run: every RabbitMQ, Redis and MongoDB one."""
    return tuple(name for name in services if name.split("-")[0] in ("rabbitmq", "redis", "mongo"))


class HaTwin(Twin):
    def __init__(
        self,
        compose: dict[str, Any],
        image: Image,
        servers: Servers,
        redis_nodes: list[int],
        namespace: str,
        ports: dict[str, int],
        directory: Path,
        nginx: str,
    ) -> None:
        self.redis_nodes = redis_nodes
        # Compose resolves relative paths from the file's directory; the twin from the root.
        for spec in compose["services"].values():
            spec["volumes"] = [_from_root(str(volume)) for volume in spec.get("volumes") or []]
        super().__init__(compose, image, servers, namespace, ports, directory, nginx)

    @property
    def levels(self) -> list[list[str]]:
        return start_order(self.services, skip=engines(self.services))

    def _addresses(self) -> Addresses:
        endpoints: dict[str, str] = {}
        for name in engines(self.services):
            kind, _, number = name.partition("-")
            if kind == "rabbitmq":
                endpoints[f"{name}:5672"] = server_netloc(self.servers.amqp_url)
            elif kind == "redis" and number.isdigit():
                endpoints[f"{name}:6379"] = f"127.0.0.1:{self.redis_nodes[int(number) - 1]}"
            elif kind == "mongo":
                endpoints[f"{name}:27017"] = server_netloc(self.servers.mongo_url)
        for name in self.ports:
            endpoints[f"{name}:{self._container_port(name)}"] = f"127.0.0.1:{self.ports[name]}"
        return Addresses(set(self.services), endpoints, frozenset(engines(self.services)))

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
                hosts = urlsplit(value).netloc.rpartition("@")[2].split(",")
                unknown = [host for host in hosts if host.split(":")[0] not in self.services]
                if unknown:
                    raise ComposeError(f"HERALD_MONGO_URL names {unknown}, not services of the file")
                env[key] = self.servers.mongo_url
            elif key == "HERALD_AMQP_URL":
                # One URL per node: each rewritten, the list kept.
                env[key] = ",".join(self.addresses.rewrite_url(url) for url in value.split(","))
            else:
                env[key] = self.addresses.rewrite_url(value)
        return {**_base_env(), **env}
