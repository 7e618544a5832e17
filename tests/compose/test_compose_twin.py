"""docker-compose.yml and deploy/nginx.conf, checked two ways.

What a twin cannot run is checked on the file itself: the topology, health checks,
dependencies, the MongoDB replica set, what nginx mounts and proxies. The rest runs: the
file's services as processes (``tests.compose.twin``) behind nginx, and everything the
tests do goes through nginx, as a browser or business system would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import httpx
import pytest

from herald.core.names import Names
from herald.core.variables import VARIABLES
from herald.ops import metrics
from herald_client import Publisher, Subscriber
from tests.compose.conftest import Deployment
from tests.compose.twin import (
    ROOT,
    SERVER_CREDENTIALS,
    ComposeError,
    container_ports,
    depends_on,
    duration_s,
    environment,
    healthcheck_argv,
    is_herald,
    load_compose,
    nginx_config_source,
    read_dockerfile,
)
from tests.support.waiting import eventually

WAIT_S = 10.0
SECRETS = {"HERALD_ADMIN_TOKEN": "admin", "HERALD_SERVICE_TOKEN": "service"}
CREDENTIALS = {name: f"{name.lower()}-value" for name in SERVER_CREDENTIALS}
COMPOSE_VARIABLES = {**SECRETS, **CREDENTIALS}
SERVERS = ("mongo", "redis", "rabbitmq")
# The same everywhere: services meet only through these.
SHARED = ("HERALD_AMQP_URL", "HERALD_REDIS_URL", "HERALD_MONGO_URL", "HERALD_NAMESPACE", "HERALD_AUTH_URL")


def _services() -> dict[str, dict[str, Any]]:
    return load_compose(COMPOSE_VARIABLES)["services"]


def _role(spec: dict[str, Any]) -> str:
    return spec["command"][0]


def _herald(services: dict[str, dict[str, Any]], role: str | None = None) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services.items() if is_herald(spec) and (role is None or _role(spec) == role)}


def _nginx_blocks(config: str, kind: str) -> dict[str, str]:
    """``upstream NAME { ... }`` or ``location [mod] PATH { ... }`` bodies by name (no nesting)."""
    pattern = (
        r"\bupstream\s+(\S+)\s*\{([^}]*)\}" if kind == "upstream" else r"\blocation\s+(?:[=~^]+\s+)?(\S+)\s*\{([^}]*)\}"
    )
    return {match[1]: match[2] for match in re.finditer(pattern, config)}


def _directive(body: str, name: str) -> list[str]:
    return [match[1].strip() for match in re.finditer(rf"^\s*{name}\s+([^;]*);", body, re.M)]


# --- the file itself ---------------------------------------------------------------------


def test_the_topology_is_complete() -> None:
    services = _services()
    assert set(SERVERS) | {"nginx"} <= set(services)
    roles = Counter(_role(spec) for spec in _herald(services).values())
    assert roles == {"auth": 1, "collect": 1, "dispatch": 2, "push": 2}
    node_ids = [environment(spec).get("HERALD_NODE_ID") for spec in _herald(services, "push").values()]
    assert None not in node_ids and len(set(node_ids)) == len(node_ids), f"push node ids must differ: {node_ids}"
    # Every Herald service is the one image, whose entrypoint is the herald command.
    assert read_dockerfile().entrypoint == ["herald"]
    assert {spec["build"] for spec in _herald(services).values()} == {"."}
    # Only nginx is published: everything goes through it.
    assert [name for name, spec in services.items() if spec.get("ports")] == ["nginx"]


def test_every_service_has_a_health_check_and_herald_ones_check_readiness() -> None:
    services = _services()
    for name, spec in services.items():
        assert healthcheck_argv(spec), f"{name} has no health check"
    for name, spec in _herald(services).items():
        assert "/readyz" in " ".join(healthcheck_argv(spec) or []), f"{name}'s health check does not ask /readyz"
    nginx_check = " ".join(healthcheck_argv(services["nginx"]) or [])
    assert "/readyz/" in nginx_check


def test_services_start_once_what_they_need_is_healthy() -> None:
    services = _services()
    for name, spec in services.items():
        for dependency, condition in depends_on(spec).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"
    for name, spec in _herald(services).items():
        assert set(SERVERS) <= set(depends_on(spec)), f"{name} does not wait for {SERVERS}"
    for name, spec in _herald(services, "push").items():
        assert "auth" in depends_on(spec), f"{name} checks tokens against auth: it must wait for it"
    fronted = {"auth", "collect", *_herald(services, "push")}
    assert fronted <= set(depends_on(services["nginx"]))


def test_secrets_come_from_the_environment_and_the_settings_are_shared() -> None:
    for name in COMPOSE_VARIABLES:
        given = {key: value for key, value in COMPOSE_VARIABLES.items() if key != name}
        with pytest.raises(ComposeError, match=name):
            load_compose(given)
    herald = _herald(_services())
    for key in (*SHARED, *SECRETS):
        values = {environment(spec).get(key) for spec in herald.values()}
        assert len(values) == 1 and None not in values, f"{key} differs between services: {values}"
    assert {environment(spec)["HERALD_ADMIN_TOKEN"] for spec in herald.values()} == {"admin"}


def test_every_server_credential_comes_from_the_environment_and_none_is_a_default() -> None:
    """RabbitMQ ran as guest/guest, Redis and MongoDB without any password."""
    services = _services()
    rabbit = environment(services["rabbitmq"])
    assert (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]) == (
        CREDENTIALS["HERALD_RABBITMQ_USER"],
        CREDENTIALS["HERALD_RABBITMQ_PASSWORD"],
    )
    redis = services["redis"]["command"]
    assert redis[redis.index("--requirepass") + 1] == CREDENTIALS["HERALD_REDIS_PASSWORD"]
    assert environment(services["redis"])["REDISCLI_AUTH"] == CREDENTIALS["HERALD_REDIS_PASSWORD"]
    mongo = environment(services["mongo"])
    assert (mongo["MONGO_INITDB_ROOT_USERNAME"], mongo["MONGO_INITDB_ROOT_PASSWORD"]) == (
        CREDENTIALS["HERALD_MONGO_USER"],
        CREDENTIALS["HERALD_MONGO_PASSWORD"],
    )
    assert "--keyFile" in services["mongo"]["command"]
    for name, spec in _herald(services).items():
        env = environment(spec)
        amqp, redis_url, mongo_url = (urlsplit(env[key]) for key in SHARED[:3])
        assert (amqp.username, amqp.password) == (
            CREDENTIALS["HERALD_RABBITMQ_USER"],
            CREDENTIALS["HERALD_RABBITMQ_PASSWORD"],
        ), name
        assert redis_url.password == CREDENTIALS["HERALD_REDIS_PASSWORD"], name
        assert (mongo_url.username, mongo_url.password) == (
            CREDENTIALS["HERALD_MONGO_USER"],
            CREDENTIALS["HERALD_MONGO_PASSWORD"],
        ), name
    for server in SERVERS:
        assert not services[server].get("ports"), f"{server} publishes a port"


def test_mongo_is_a_replica_set_of_one() -> None:
    services = _services()
    command = services["mongo"]["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    check = " ".join(healthcheck_argv(services["mongo"]) or [])
    assert "rs.initiate" in check and "isWritablePrimary" in check and "quit(1)" in check
    member = re.search(r"_id: 'rs0', members: \[\{_id: 0, host: '([^']+)'\}\]", check)
    assert member, check
    for name, spec in _herald(services).items():
        url = urlsplit(environment(spec)["HERALD_MONGO_URL"])
        assert f"{url.hostname}:{url.port}" == member[1], f"{name} reaches mongo by another name than its member's"
        query = parse_qs(url.query)
        assert query.get("replicaSet") == ["rs0"] and "directConnection" not in query, name


def test_nginx_mounts_its_config_and_fronts_every_service() -> None:
    services = _services()
    nginx = services["nginx"]
    source = nginx_config_source(nginx)
    assert source == ROOT / "deploy" / "nginx.conf"
    config = source.read_text()
    assert container_ports(nginx) == [80] and _directive(config, "listen") == ["80"]

    def addresses(role: str) -> set[str]:
        return {f"{name}:{environment(spec)['HERALD_PORT']}" for name, spec in _herald(services, role).items()}

    upstreams = {
        name: {s.split()[0] for s in _directive(body, "server")}
        for name, body in _nginx_blocks(config, "upstream").items()
    }
    assert upstreams == {
        "herald_push": addresses("push"),
        "herald_auth": addresses("auth"),
        "herald_collect": addresses("collect"),
    }

    ws = _nginx_blocks(config, "location")["/ws"]
    assert "proxy_pass http://herald_push;" in ws
    headers = _directive(ws, "proxy_set_header")
    assert "Upgrade $http_upgrade" in headers and "Connection $connection_upgrade" in headers
    default = next(variable.default for variable in VARIABLES if variable.name == "HERALD_HEARTBEAT_S")
    heartbeats = {float(environment(spec).get("HERALD_HEARTBEAT_S", default)) for spec in _herald(services).values()}
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directive(ws, timeout)
        # Presence lives 3 heartbeats; an idle socket must outlive it by far.
        assert duration_s(value, 0) > 3 * max(heartbeats), f"/ws {timeout} {value} vs heartbeat {max(heartbeats)}"


# --- the file, running -------------------------------------------------------------------


class AccessLog:
    """nginx's JSON access log (its stdout, in the process log): which upstream served what."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def next_entry(self, method: str, uri: str, timeout_s: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                chunk = log.read()
            lines = chunk.split(b"\n")[:-1]  # the last one may be half written
            for index, line in enumerate(lines):
                if line.startswith(b"{"):
                    entry = json.loads(line)
                    if entry["method"] == method and entry["uri"] == uri:
                        self.offset += sum(len(each) + 1 for each in lines[: index + 1])
                        return entry
            time.sleep(0.02)
        raise AssertionError(f"no access log entry for {method} {uri}")


def _sample(template: str) -> str:
    values = {"channel": "user:someone", "app_id": "app_0000000000000000"}
    return re.sub(r"\{(\w+)\}", lambda match: values.get(match[1], "someone"), template)


def test_every_health_check_passes(deployment: Deployment) -> None:
    for name, proc in deployment.twin.procs.items():
        assert proc.healthy(), f"{name}'s compose health check fails:\n{proc.log_tail()}"
    with httpx.Client(base_url=deployment.base_url, timeout=WAIT_S) as http:
        assert http.get("/healthz").status_code == 200
        for service in ("auth", "collect", "push"):
            answer = http.get(f"/readyz/{service}")
            assert answer.status_code == 200 and answer.json()["status"] == "ready", (service, answer.text)


def test_every_route_reaches_its_service(deployment: Deployment) -> None:
    """Each path of auth's and collect's OpenAPI and each page of push, sent to nginx, is
    served by that service (nginx's access log names the upstream); anything else is
    nginx's 404 in Herald's error shape."""
    twin = deployment.twin
    log = AccessLog(twin.procs["nginx"].log_path)
    roles = {_role(spec) for spec in _herald(twin.services).values()}
    ports = {role: {f"127.0.0.1:{twin.ports[name]}" for name in deployment.services(role)} for role in roles}
    with httpx.Client(base_url=deployment.base_url, timeout=WAIT_S) as http:

        def served_by(method: str, path: str) -> tuple[str, httpx.Response]:
            answer = http.request(method, path)
            upstream = log.next_entry(method, path)["upstream"]
            return next((role for role, found in ports.items() if upstream in found), upstream), answer

        routes: list[tuple[str, str, str]] = []
        for role, schema_path in (("auth", "/auth/openapi.json"), ("collect", "/openapi.json")):
            schema_role, answer = served_by("GET", schema_path)
            assert schema_role == role and answer.json()["info"]["title"] == f"Herald {role}"
            for path, methods in answer.json()["paths"].items():
                # Health and metrics stay on the compose network, for the healthcheck and a scraper.
                # Introspection is for push nodes, inside: from outside it is nginx's 404.
                routes += [
                    ("nginx" if "internal" in operation.get("tags", ()) else role, method.upper(), _sample(path))
                    for method, operation in methods.items()
                    if "operations" not in operation.get("tags", ())
                ]
        assert len(routes) >= 15, routes
        routes += [("push", "GET", path) for path in ("/", "/herald.js", "/chat", "/console/config", "/ws")]
        routes += [("collect", "GET", "/docs")]
        assert sum(role == "nginx" for role, _, _ in routes) == 2, routes  # /v1/introspect and .../batch
        for role, method, path in routes:
            # No credentials: every service refuses before doing anything.
            where, answer = served_by(method, path)
            if role == "nginx":
                assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", path
                assert where in ("", "-"), f"{method} {path} reached {where}"
            else:
                assert where == role, f"{method} {path} should reach {role}"

        pages = (("/", "text/html"), ("/herald.js", "text/javascript"), ("/chat", "text/html"))
        for path, content_type in pages:
            answer = http.get(path)
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(content_type), path
        # The console page calls auth and collect on its own origin: nginx's.
        console = http.get("/console/config").json()
        assert (console["auth_url"], console["collect_url"]) == ("", ""), console

        for path in ("/metrics", "/v1/unknown", "/healthz/extra"):
            where, answer = served_by("GET", path)
            assert where == "" and answer.status_code == 404, (path, where)
            assert answer.json()["error"]["code"] == "not_found"


async def _next_message(subscriber: Subscriber) -> dict[str, Any]:
    return await asyncio.wait_for(anext(subscriber), WAIT_S)


async def test_messages_posted_through_nginx_reach_sockets_on_both_push_nodes(
    deployment: Deployment, publisher: Publisher
) -> None:
    twin = deployment.twin
    push_nodes = deployment.services("push")
    node_ids = {environment(twin.services[name])["HERALD_NODE_ID"]: name for name in push_nodes}
    users = [f"spread-{index}" for index in range(4)]
    subscribers = [Subscriber([deployment.ws_url], await publisher.token(user)) for user in users]
    try:
        for subscriber in subscribers:
            await subscriber.start()

        async def nodes_seen() -> set[str] | None:
            seen = set()
            for user in users:
                seen |= {conn["node"] for conn in (await publisher.presence(user))["connections"]}
            return seen if len(seen) == len(push_nodes) else None

        assert await eventually(nodes_seen, WAIT_S, what="connections on every push node", interval_s=0.05) == set(
            node_ids
        )

        async with httpx.AsyncClient(timeout=WAIT_S) as http:

            async def connections() -> dict[str, float] | None:
                counts = {}
                for name in push_nodes:
                    text = (await http.get(f"{twin.url(name)}/metrics")).text
                    counts[name] = metrics.sample(text, "herald_push_connections")
                return counts if sum(counts.values()) == len(users) else None

            counts = await eventually(connections, WAIT_S, what="herald_push_connections on the nodes", interval_s=0.05)
        assert all(count >= 1 for count in counts.values()), counts

        sent = await publisher.send(users, "order.shipped", {"order": 42})
        assert [item["channel"] for item in sent] == [f"user:{user}" for user in users]
        for user, subscriber in zip(users, subscribers, strict=True):
            frame = await _next_message(subscriber)
            assert (frame["channel"], frame["event"], frame["data"]) == (f"user:{user}", "order.shipped", {"order": 42})
            assert frame["offset"] == 1
    finally:
        for subscriber in subscribers:
            await subscriber.close()


async def test_both_dispatch_workers_route_messages(
    deployment: Deployment, publisher: Publisher, amqp_url: str
) -> None:
    """Both workers consume the one dispatch queue, and the broker hands each a share: their
    own /metrics count what each routed."""
    twin = deployment.twin
    workers = deployment.services("dispatch")
    queue_name = Names(twin.namespace).work_queues("quorum").dispatch  # the compose file's queue type
    connection = await aio_pika.connect(amqp_url, timeout=5)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        assert queue.declaration_result.consumer_count == len(workers) == 2
    finally:
        await connection.close()

    async with httpx.AsyncClient(timeout=WAIT_S) as http:

        async def routed() -> dict[str, float]:
            texts = {name: (await http.get(f"{twin.url(name)}/metrics")).text for name in workers}
            return {name: metrics.sample(text, "herald_messages_dispatched_total") for name, text in texts.items()}

        before = await routed()
        count = 8
        async with Subscriber([deployment.ws_url], await publisher.token("dispatched")) as subscriber:
            for index in range(count):
                await publisher.send(["dispatched"], "routed", {"n": index})
            frames = [await _next_message(subscriber) for _ in range(count)]
        assert [frame["data"]["n"] for frame in frames] == list(range(count))

        async def shares() -> dict[str, float] | None:
            after = await routed()
            share = {name: after[name] - before[name] for name in workers}
            return share if sum(share.values()) == count else None

        share = await eventually(shares, WAIT_S, what="dispatch metrics counting every message", interval_s=0.05)
    assert all(value > 0 for value in share.values()), f"a dispatch worker routed nothing: {share}"
