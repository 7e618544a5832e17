"""A cluster of real processes: auth, collect, dispatch and two push nodes on RabbitMQ,
Redis and MongoDB(-wire), all under one namespace of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from herald.client import Operator, Publisher
from herald.settings import generate_secret
from tests.conftest import RUN_ID
from tests.support.cleanup import drop_namespace
from tests.support.procs import HeraldProcess, free_port_block

pytestmark = pytest.mark.cluster


@dataclass
class Cluster:
    namespace: str
    env: dict[str, str]
    ports: dict[str, int]
    directory: Path
    processes: dict[str, HeraldProcess] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def ws_url(self, node: str) -> str:
        return f"ws://127.0.0.1:{self.ports[node]}/ws"

    def node_id(self, node: str) -> str:
        return f"node-{node}"

    def process(self, name: str) -> HeraldProcess:
        role = "push" if name.startswith("push") else name
        env = {**self.env, "HERALD_PORT": str(self.ports[name])}
        if role == "push":
            env["HERALD_NODE_ID"] = self.node_id(name)
        return HeraldProcess(name, [role], env, self.directory / f"{name}.log", self.ports[name])

    def start(self, name: str) -> None:
        self.processes[name] = self.process(name)
        self.processes[name].start()

    def stop_all(self) -> dict[str, int | None]:
        return {name: proc.stop() for name, proc in reversed(self.processes.items())}


SERVICES = ("auth", "collect", "dispatch", "push-a", "push-b")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, redis_url: str, mongo_url: str
) -> Iterator[Cluster]:
    namespace = f"c{RUN_ID}_{tmp_path_factory.getbasetemp().name[-3:].strip('-')}"
    namespace = "".join(ch for ch in namespace if ch.isalnum() or ch == "_").lower()
    base = free_port_block(len(SERVICES))
    ports = {name: base + 1 + index for index, name in enumerate(SERVICES)}
    env = {
        "HERALD_NAMESPACE": namespace,
        "HERALD_AMQP_URL": amqp_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_MONGO_URL": mongo_url,
        "HERALD_ADMIN_TOKEN": generate_secret(),
        "HERALD_SERVICE_TOKEN": generate_secret(),
        "HERALD_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
        "HERALD_HEARTBEAT_S": "1",
        "HERALD_LOG_LEVEL": "INFO",
    }
    herald = Cluster(namespace, env, ports, Path(tmp_path_factory.mktemp("cluster")))
    try:
        for name in SERVICES:
            herald.start(name)
        yield herald
    finally:
        codes = herald.stop_all()
        asyncio.run(drop_namespace(namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url))
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"


@pytest.fixture(scope="module")
def cluster_app(cluster: Cluster) -> dict[str, str]:
    async def create() -> dict[str, str]:
        async with Operator(cluster.url("auth"), cluster.env["HERALD_ADMIN_TOKEN"]) as operator:
            return await operator.create_app("cluster-test")

    return asyncio.run(create())


@pytest.fixture
async def publisher(cluster: Cluster, cluster_app: dict[str, str]) -> AsyncIterator[Publisher]:
    async with Publisher(cluster.url("auth"), cluster.url("collect"), cluster_app["api_key"]) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
