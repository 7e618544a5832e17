"""deploy/docker-compose.ha.yml, checked two ways (there is no Docker engine here).

On the file itself: three RabbitMQ nodes forming one cluster, a Redis Cluster of six nodes
(three primaries with a replica each), a three-member MongoDB replica set, Herald services
that name every node of each and whose settings Herald accepts, and a start order without
cycles. As processes (``tests.ha.ha_twin``): the file's Herald services and nginx, with its
commands, environment and health checks, on this machine's engines with Redis in cluster
mode; a message posted through nginx reaches a socket.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from herald.core.settings import Settings, generate_secret
from herald_client import Operator, Publisher, Subscriber
from tests.compose.twin import (
    SERVER_CREDENTIALS,
    ComposeError,
    Servers,
    depends_on,
    environment,
    healthcheck_argv,
    is_herald,
    load_compose,
    read_dockerfile,
    start_order,
)
from tests.conftest import RUN_ID
from tests.ha.ha_twin import HA_FILE, HaTwin, engines
from tests.support.cleanup import drop_namespace
from tests.support.procs import free_port_block
from tests.support.redis_ha import RedisCluster

pytestmark = pytest.mark.ha

VARIABLES = {
    "HERALD_ADMIN_TOKEN": "admin-" + "a" * 32,
    "HERALD_SERVICE_TOKEN": "service-" + "s" * 32,
    "HERALD_ERLANG_COOKIE": "cookie",
    "HERALD_MONGO_KEY": "bW9uZ28ta2V5",
    **{name: f"{name.lower()}-value" for name in SERVER_CREDENTIALS},
}
WAIT_S = 15.0


def _services() -> dict[str, dict[str, Any]]:
    return load_compose(VARIABLES, HA_FILE)["services"]


def _herald(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services.items() if is_herald(spec)}


def _numbered(services: dict[str, dict[str, Any]], kind: str) -> list[str]:
    return sorted(name for name in services if re.fullmatch(rf"{kind}-\d+", name))


def _script(spec: dict[str, Any]) -> str:
    return " ".join(str(part) for part in spec["command"])


# --- the file itself ---------------------------------------------------------------------


def test_the_same_herald_services_as_the_single_node_file_behind_nginx() -> None:
    services = _services()
    roles = Counter(spec["command"][0] for spec in _herald(services).values())
    assert roles == {"auth": 1, "collect": 1, "dispatch": 2, "push": 2}
    assert "nginx" in services


def test_three_rabbitmq_nodes_form_one_cluster_sharing_one_cookie() -> None:
    services = _services()
    nodes = _numbered(services, "rabbitmq")
    assert nodes == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    for name in nodes:
        spec = services[name]
        script = _script(spec)
        assert spec["hostname"] == name, "node names are rabbit@<hostname>"
        listed = re.findall(r"classic_config\.nodes\.\d+ = (rabbit@[\w-]+)", script)
        assert listed == [f"rabbit@{node}" for node in nodes], script
        assert "$HERALD_ERLANG_COOKIE" in script and ".erlang.cookie" in script
        assert environment(spec)["HERALD_ERLANG_COOKIE"] == VARIABLES["HERALD_ERLANG_COOKIE"]
        assert healthcheck_argv(spec), f"{name} has no health check"


def test_a_missing_erlang_cookie_stops_compose_with_a_message() -> None:
    with pytest.raises(ComposeError, match="HERALD_ERLANG_COOKIE"):
        load_compose({k: v for k, v in VARIABLES.items() if k != "HERALD_ERLANG_COOKIE"}, HA_FILE)


def test_every_engine_credential_comes_from_the_environment() -> None:
    """RabbitMQ ran as guest/guest, Redis and MongoDB without any password."""
    for name in ("HERALD_MONGO_KEY", *SERVER_CREDENTIALS):
        with pytest.raises(ComposeError, match=name):
            load_compose({k: v for k, v in VARIABLES.items() if k != name}, HA_FILE)
    services = _services()
    password = VARIABLES["HERALD_REDIS_PASSWORD"]
    for name in _numbered(services, "redis"):
        command = services[name]["command"]
        assert command[command.index("--requirepass") + 1] == password, name
        assert command[command.index("--masterauth") + 1] == password, name
    assert environment(services["redis-cluster"])["REDISCLI_AUTH"] == password
    for name in _numbered(services, "rabbitmq"):
        env = environment(services[name])
        assert env["RABBITMQ_DEFAULT_USER"] == VARIABLES["HERALD_RABBITMQ_USER"], name
    for name in _numbered(services, "mongo"):
        assert "--keyFile" in services[name]["command"], name
        assert environment(services[name])["MONGO_INITDB_ROOT_USERNAME"] == VARIABLES["HERALD_MONGO_USER"], name
    for name, spec in _herald(services).items():
        env = environment(spec)
        for url in env["HERALD_AMQP_URL"].split(","):
            assert urlsplit(url).username == VARIABLES["HERALD_RABBITMQ_USER"], name
        assert urlsplit(env["HERALD_REDIS_URL"]).password == password, name
        assert urlsplit(env["HERALD_MONGO_URL"]).password == VARIABLES["HERALD_MONGO_PASSWORD"], name


def test_six_redis_nodes_become_a_cluster_of_three_primaries_with_a_replica_each() -> None:
    services = _services()
    nodes = _numbered(services, "redis")
    assert len(nodes) == 6
    for name in nodes:
        command = services[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == name
        assert healthcheck_argv(services[name]), f"{name} has no health check"
    init = services["redis-cluster"]
    script = _script(init)
    assert "--cluster-replicas 1" in script and "--cluster create" in script
    assert "for n in 1 2 3 4 5 6" in script and "getent hosts redis-$n" in script
    assert set(depends_on(init)) == set(nodes) and set(depends_on(init).values()) == {"service_healthy"}


def test_three_mongodb_members_form_the_replica_set_herald_names() -> None:
    services = _services()
    members = _numbered(services, "mongo")
    assert members == ["mongo-1", "mongo-2", "mongo-3"]
    for name in members:
        command = services[name]["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
    initiate = " ".join(healthcheck_argv(services["mongo-1"]) or [])
    assert re.findall(r"host: '([\w-]+:\d+)'", initiate) == [f"{member}:27017" for member in members]
    assert "_id: 'rs0'" in initiate


def test_every_herald_service_names_every_node_of_every_engine() -> None:
    services = _services()
    rabbitmq, redis, mongo = (set(_numbered(services, kind)) for kind in ("rabbitmq", "redis", "mongo"))
    for name, spec in _herald(services).items():
        env = environment(spec)
        amqp_hosts = {urlsplit(url).hostname for url in env["HERALD_AMQP_URL"].split(",")}
        assert amqp_hosts == rabbitmq, name
        assert env["HERALD_REDIS_MODE"] == "cluster" and urlsplit(env["HERALD_REDIS_URL"]).hostname in redis, name
        mongo_url = urlsplit(env["HERALD_MONGO_URL"])
        assert {host.split(":")[0] for host in mongo_url.netloc.rpartition("@")[2].split(",")} == mongo, name
        assert parse_qs(mongo_url.query)["replicaSet"] == ["rs0"], name


def test_herald_accepts_every_services_settings() -> None:
    image = read_dockerfile()
    for name, spec in _herald(_services()).items():
        settings = Settings.from_env(spec["command"][0], {**image.env, **environment(spec)})
        assert settings.queue_type == "quorum", name
        assert len(settings.amqp_urls) == 3, name
        assert settings.redis_mode == "cluster", name


def test_herald_waits_for_every_engine_and_the_start_order_has_no_cycle() -> None:
    services = _services()
    for name, spec in _herald(services).items():
        needs = depends_on(spec)
        assert needs["redis-cluster"] == "service_completed_successfully", name
        assert all(needs[node] == "service_healthy" for node in _numbered(services, "rabbitmq")), name
        assert needs["mongo-1"] == "service_healthy", name
        assert healthcheck_argv(spec), name
    levels = start_order(services, skip=())
    assert set(itertools.chain(*levels)) == set(services)


# --- as processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ha_twin(
    tmp_path_factory: pytest.TempPathFactory,
    redis_cluster: RedisCluster,
    amqp_url: str,
    mongo_url: str,
    redis_url: str,
) -> Iterator[HaTwin]:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (scripts/test installs Debian's nginx); the twin runs it")
    variables = {**VARIABLES, "HERALD_ADMIN_TOKEN": generate_secret(), "HERALD_SERVICE_TOKEN": generate_secret()}
    compose = load_compose(variables, HA_FILE)
    names = [name for level in start_order(compose["services"], skip=engines(compose["services"])) for name in level]
    base = free_port_block(len(names))
    ports = {name: base + 1 + index for index, name in enumerate(names)}
    namespace = f"h{RUN_ID}_twin"
    twin = HaTwin(
        compose,
        read_dockerfile(),
        Servers(amqp_url, redis_cluster.url, mongo_url),
        [server.port for server in redis_cluster.servers],
        namespace,
        ports,
        Path(tmp_path_factory.mktemp("compose-ha")),
        nginx,
    )
    twin.variables = variables  # type: ignore[attr-defined]
    try:
        twin.start()
        yield twin
    finally:
        codes = twin.stop()
        asyncio.run(drop_namespace(namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url))
        redis_cluster.delete_matching(f"{namespace}:*")
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}\n{twin.logs()}"


@pytest.mark.timeout(300)
async def test_the_files_herald_half_runs_on_a_redis_cluster_and_delivers_through_nginx(ha_twin: HaTwin) -> None:
    base = ha_twin.url("nginx")
    async with Operator(base, ha_twin.variables["HERALD_ADMIN_TOKEN"]) as operator:  # type: ignore[attr-defined]
        app = await operator.create_app("compose-ha")
    async with Publisher(base, base, app["api_key"]) as publisher:
        ws = f"ws://127.0.0.1:{ha_twin.ports['nginx']}/ws"
        async with Subscriber([ws], await publisher.token("ann")) as subscriber:
            await publisher.send(["ann"], "through-the-ha-file", {"n": 1})
            async with asyncio.timeout(WAIT_S):
                frame = await anext(aiter(subscriber))
    assert (frame["event"], frame["data"]) == ("through-the-ha-file", {"n": 1})
    for name in ha_twin.procs:
        assert ha_twin.procs[name].healthy(), f"{name} is not healthy any more:\n{ha_twin.logs()}"
