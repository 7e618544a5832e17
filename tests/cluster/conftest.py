"""Clusters of real processes: auth, collect, dispatch and two push nodes on RabbitMQ, Redis
and MongoDB(-wire), each cluster under a namespace of its own.

``cluster`` is shared by the tests of a module that leave it intact; ``own_cluster`` is a
fresh one for a test that breaks things (kills a node, stops a server).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from herald.core.settings import generate_secret
from herald_client import Operator, Publisher
from tests.conftest import RUN_ID
from tests.support.cleanup import drop_namespace
from tests.support.procs import HeraldProcess, free_port_block
from tests.support.servers import MongoWire

SERVICES = ("auth", "collect", "dispatch", "push-a", "push-b")
_numbers = itertools.count(1)


@dataclass
class Cluster:
    namespace: str
    env: dict[str, str]
    ports: dict[str, int]
    directory: Path
    processes: dict[str, HeraldProcess] = field(default_factory=dict)
    mongo: MongoWire | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def ws_url(self, node: str) -> str:
        return f"ws://127.0.0.1:{self.ports[node]}/ws"

    @staticmethod
    def node_id(node: str) -> str:
        return f"node-{node}"

    def start(self, *names: str) -> None:
        """Start these services side by side, and return once every one of them is healthy."""
        for name in names:
            role = "push" if name.startswith("push") else name
            env = {**self.env, "HERALD_PORT": str(self.ports[name])}
            if role == "push":
                env["HERALD_NODE_ID"] = self.node_id(name)
            self.processes[name] = HeraldProcess(name, [role], env, self.directory / f"{name}.log", self.ports[name])
            self.processes[name].spawn()
        for name in names:
            self.processes[name].await_healthy()

    def kill(self, name: str) -> None:
        """kill -9: no drain, no goodbye."""
        process = self.processes.pop(name)
        process.signal(signal.SIGKILL)
        process.stop()

    def terminate(self, name: str, timeout_s: float = 30.0) -> int | None:
        return self.processes.pop(name).stop(timeout_s)

    def stop_all(self) -> dict[str, int | None]:
        return {name: proc.stop() for name, proc in reversed(list(self.processes.items()))}

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{proc.log_tail(15)}" for name, proc in self.processes.items())


def start_cluster(directory: Path, amqp_url: str, redis_url: str, mongo_url: str, **extra_env: str) -> Cluster:
    namespace = f"c{RUN_ID}_{next(_numbers)}"
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
        **extra_env,
    }
    cluster = Cluster(namespace, env, ports, directory)
    try:
        cluster.start(*SERVICES)
    except BaseException:
        cluster.stop_all()
        raise
    return cluster


def finish_cluster(cluster: Cluster, amqp_url: str, redis_url: str, mongo_url: str) -> dict[str, int | None]:
    codes = cluster.stop_all()
    asyncio.run(drop_namespace(cluster.namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url))
    return codes


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, redis_url: str, mongo_url: str
) -> Iterator[Cluster]:
    herald = start_cluster(Path(tmp_path_factory.mktemp("cluster")), amqp_url, redis_url, mongo_url)
    try:
        yield herald
    finally:
        codes = finish_cluster(herald, amqp_url, redis_url, mongo_url)
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"


@pytest.fixture
def own_cluster(request: pytest.FixtureRequest, tmp_path: Path, amqp_url: str, redis_url: str) -> Iterator[Cluster]:
    """A fresh cluster with a MongoDB-wire of its own, which the test may stop. A test marked
    ``cluster_env(NAME="value", ...)`` gets those variables in every service's environment."""
    marker = request.node.get_closest_marker("cluster_env")
    extra_env: dict[str, str] = dict(marker.kwargs) if marker else {}
    mongo = MongoWire(tmp_path / "mongo")
    mongo.start()
    herald: Cluster | None = None
    try:
        herald = start_cluster(tmp_path, amqp_url, redis_url, mongo.url, **extra_env)
        herald.mongo = mongo
        yield herald
    finally:
        if herald is not None:
            finish_cluster(herald, amqp_url, redis_url, mongo.url)
        mongo.stop()


def create_app(cluster: Cluster) -> dict[str, str]:
    async def create() -> dict[str, str]:
        async with Operator(cluster.url("auth"), cluster.env["HERALD_ADMIN_TOKEN"]) as operator:
            return await operator.create_app("cluster-test")

    return asyncio.run(create())


@pytest.fixture(scope="module")
def cluster_app(cluster: Cluster) -> dict[str, str]:
    return create_app(cluster)


@pytest.fixture
async def publisher(cluster: Cluster, cluster_app: dict[str, str]) -> AsyncIterator[Publisher]:
    async with Publisher(cluster.url("auth"), cluster.url("collect"), cluster_app["api_key"]) as client:
        yield client


@pytest.fixture
def own_app(own_cluster: Cluster) -> dict[str, str]:
    return create_app(own_cluster)


@pytest.fixture
async def own_publisher(own_cluster: Cluster, own_app: dict[str, str]) -> AsyncIterator[Publisher]:
    async with Publisher(own_cluster.url("auth"), own_cluster.url("collect"), own_app["api_key"]) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
