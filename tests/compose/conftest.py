"""The compose file's topology as processes (``tests.compose.twin``), one per test module,
under a namespace of its own on the shared servers; nginx is the front door."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from herald.core.settings import generate_secret
from herald_client import Operator, Publisher
from tests.compose.twin import SERVER_CREDENTIALS, Servers, Twin, load_compose, read_dockerfile, start_order
from tests.conftest import RUN_ID
from tests.support.cleanup import drop_namespace
from tests.support.procs import free_port_block

_numbers = itertools.count(1)
NGINX_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((path for path in NGINX_PLACES if Path(path).exists()), None)


@dataclass
class Deployment:
    """A running twin and the values the compose file was interpolated with."""

    twin: Twin
    variables: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.twin.url("nginx")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.twin.ports['nginx']}/ws"

    @property
    def admin_token(self) -> str:
        return self.variables["HERALD_ADMIN_TOKEN"]

    def services(self, role: str) -> list[str]:
        """The compose services running ``herald <role>``."""
        return sorted(
            name for name, spec in self.twin.services.items() if spec.get("build") and spec["command"] == [role]
        )


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, redis_url: str, mongo_url: str
) -> Iterator[Deployment]:
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx); the compose twin runs it")
    variables = {
        "HERALD_ADMIN_TOKEN": generate_secret(),
        "HERALD_SERVICE_TOKEN": generate_secret(),
        # The compose file's servers take these; the twin runs the test's servers instead.
        **{name: generate_secret() for name in SERVER_CREDENTIALS},
    }
    compose = load_compose(variables)
    names = [name for level in start_order(compose["services"]) for name in level]
    base = free_port_block(len(names))
    ports = {name: base + 1 + index for index, name in enumerate(names)}
    namespace = f"k{RUN_ID}_{next(_numbers)}"
    directory = Path(tmp_path_factory.mktemp("compose"))
    servers = Servers(amqp_url, redis_url, mongo_url)
    twin = Twin(compose, read_dockerfile(), servers, namespace, ports, directory, nginx)
    try:
        twin.start()
        yield Deployment(twin, variables)
    finally:
        codes = twin.stop()
        asyncio.run(drop_namespace(namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url))
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}\n{twin.logs()}"


@pytest.fixture(scope="module")
def app(deployment: Deployment) -> dict[str, str]:
    """An app created through nginx with the operator token."""

    async def create() -> dict[str, str]:
        async with Operator(deployment.base_url, deployment.admin_token) as operator:
            return await operator.create_app("compose-twin")

    return asyncio.run(create())


@pytest.fixture
async def publisher(deployment: Deployment, app: dict[str, str]) -> AsyncIterator[Publisher]:
    """The app's client, reaching auth and collect through nginx only."""
    async with Publisher(deployment.base_url, deployment.base_url, app["api_key"]) as client:
        yield client
