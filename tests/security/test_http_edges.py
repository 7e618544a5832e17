"""Hostile callers of auth's and collect's HTTP APIs, against the apps as their processes
serve them (``herald.ops.runtime.served``), on in-process adapters: oversized and streamed
bodies, unbounded lists, tokens in URLs and logs, readiness probes that leak, short
credentials and operator-token guessing (issue 14)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest

from herald.core.credentials import secret_hash
from herald.core.env import MIN_SECRET_LENGTH
from herald.core.errors import ConfigError, Unavailable
from herald.core.model import TokenRecord
from herald.core.settings import Settings
from herald.web.throttle import MAX_FAILURES, FailureThrottle
from herald_client import Publisher
from tests.support.http_apps import ADMIN, APP_ID, KEY, SERVICE, http_apps

JSON = {"content-type": "application/json"}
MiB = 1024 * 1024


def _message(user: str = "u1") -> dict[str, Any]:
    return {"to": {"users": [user]}, "event": "e", "data": {"n": 1}}


# --- bodies and lists ------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_413_before_it_is_read() -> None:
    """collect read up to 32 MiB of JSON (and parsed it) before the batch limit applied."""
    async with http_apps() as apps, apps.client("collect") as collect:
        assert apps.settings.body_limit == MiB  # the default: 4 x max_payload, at least 1 MiB
        body = b'{"messages": [' + b",".join([b'{"to":{"users":["u"]},"event":"e"}'] * 60_000) + b"]}"
        assert MiB < len(body) < 32 * MiB

        answer = await collect.post("/v1/messages/batch", content=body, headers=JSON)

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert answer.headers["content-type"] == "application/json"


async def test_a_streamed_body_without_a_length_is_cut_at_the_limit() -> None:
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        chunk = b"[" * 65536
        for _ in range(64):  # 4 MiB offered, at most
            sent += len(chunk)
            yield chunk

    async with http_apps() as apps, apps.client("collect") as collect:
        answer = await collect.post("/v1/messages", content=chunks(), headers=JSON)

    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert sent <= MiB + 65536  # stopped reading at the limit


async def test_herald_max_body_sets_the_limit() -> None:
    async with http_apps({"HERALD_MAX_BODY": "4096"}) as apps, apps.client("collect") as collect:
        small = await collect.post("/v1/messages", json=_message())
        large = await collect.post("/v1/messages", json={**_message(), "data": "x" * 5000})

    assert small.status_code == 202
    assert large.status_code == 413


def test_herald_max_body_is_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match="HERALD_MAX_BODY"):
        Settings.from_env("standalone", {"HERALD_MAX_BODY": "lots"})
    with pytest.raises(ConfigError, match="HERALD_MAX_BODY"):
        Settings.from_env("standalone", {"HERALD_MAX_BODY": "10"})


def _arrays(schema: Any, components: dict[str, Any], path: str, seen: set[str]) -> list[tuple[str, Any]]:
    """Every array schema reachable from ``schema``, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[1]
            # A message's `data` is any JSON: bounded in bytes (HERALD_MAX_PAYLOAD), not in count.
            if name not in seen and name != "JsonData":
                found += _arrays(components[name], components, name, seen | {name})
            return found
        if schema.get("type") == "array":
            found.append((path, schema))
        for key, value in schema.items():
            found += _arrays(value, components, f"{path}.{key}", seen)
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += _arrays(value, components, f"{path}[{index}]", seen)
    return found


@pytest.mark.parametrize("service", ["auth", "collect"])
async def test_every_list_a_request_body_may_carry_is_bounded(service: str) -> None:
    """`to.users` and a batch's `messages` had no maxItems: the schema promised no bound."""
    async with http_apps() as apps, apps.client(service) as client:
        document = (await client.get("/openapi.json")).json()
    components = document["components"]["schemas"]
    arrays = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                arrays += _arrays(content["schema"], components, f"{method.upper()} {path}", set())
    assert arrays, "no list in any request body: the walk is broken"
    unbounded = [where for where, schema in arrays if "maxItems" not in schema]
    assert unbounded == []


async def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    depth = 100_000
    body = '{"to":{"users":["a"]},"event":"e","data":' + "[" * depth + "]" * depth + "}"
    async with http_apps() as apps, apps.client("collect") as collect:
        answer = await collect.post("/v1/messages", content=body, headers=JSON)
    assert answer.status_code == 400


# --- secrets in URLs and logs ----------------------------------------------------------


async def _token(apps: Any, user: str = "ann") -> str:
    async with apps.client("auth") as auth:
        answer = await auth.post("/v1/tokens", json={"user_id": user})
    assert answer.status_code == 201
    return str(answer.json()["token"])


async def _active(apps: Any, token: str) -> bool:
    async with apps.client("auth", token=SERVICE) as auth:
        answer = await auth.post("/v1/introspect", json={"token": token})
    return bool(answer.json()["active"])


async def test_a_token_is_revoked_from_the_body_so_it_never_is_in_a_url() -> None:
    async with http_apps() as apps:
        token = await _token(apps)
        async with apps.client("auth") as auth:
            answer = await auth.post("/v1/revocations", json={"token": token})
            again = await auth.post("/v1/revocations", json={"token": token})
            empty = await auth.post("/v1/revocations", json={"token": ""})
        assert answer.status_code == 204
        assert await _active(apps, token) is False
    assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_token"
    assert empty.status_code == 422


async def test_another_apps_token_cannot_be_revoked_from_the_body() -> None:
    async with http_apps() as apps:
        await apps.store.insert_token(TokenRecord(secret_hash("ht_other"), "app_other", "eve", time.time() + 60))
        async with apps.client("auth") as auth:
            answer = await auth.post("/v1/revocations", json={"token": "ht_other"})
    assert answer.status_code == 404


async def test_the_old_path_route_still_revokes_and_is_marked_deprecated() -> None:
    async with http_apps() as apps:
        token = await _token(apps)
        async with apps.client("auth") as auth:
            answer = await auth.delete(f"/v1/tokens/{token}")
            document = (await auth.get("/openapi.json")).json()
        assert answer.status_code == 204 and await _active(apps, token) is False
    assert document["paths"]["/v1/tokens/{token}"]["delete"]["deprecated"] is True
    assert "deprecated" not in document["paths"]["/v1/revocations"]["post"]


async def test_the_python_client_revokes_with_the_token_in_the_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    publisher = Publisher("http://auth", "http://collect", KEY)
    publisher._auth._transport = httpx.MockTransport(answer)
    async with publisher:
        await publisher.revoke("ht_secret-token")

    [request] = seen
    assert (request.method, request.url.path, request.url.query) == ("POST", "/v1/revocations", b"")
    assert "ht_secret-token" not in str(request.url)
    assert json.loads(request.read()) == {"token": "ht_secret-token"}


async def test_a_crash_logs_the_route_not_the_token_in_its_path_or_query(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="herald.http")
    async with http_apps(failures={"get_token": RuntimeError("a bug")}) as apps, apps.client("auth") as auth:
        token = "ht_path-secret"
        in_path = await auth.delete(f"/v1/tokens/{token}?token={token}")
        in_body = await auth.post("/v1/revocations?token=query-secret", json={"token": token})

    assert (in_path.status_code, in_body.status_code) == (500, 500)
    assert in_path.json()["error"]["code"] == "internal"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "DELETE /v1/tokens/{token}" in logged and "POST /v1/revocations" in logged
    assert "secret" not in logged and "?" not in logged


async def test_a_crash_in_collect_logs_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="herald.http")
    async with http_apps(failures={"get_message": RuntimeError("a bug")}) as apps, apps.client("collect") as collect:
        answer = await collect.get("/v1/messages/m1?token=ht_query-secret")
    assert answer.status_code == 500
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /v1/messages/{message_id}" in logged
    assert "ht_query-secret" not in logged and "m1" not in logged


# --- internal endpoints ----------------------------------------------------------------


async def test_readyz_says_a_dependency_is_down_without_its_error(caplog: pytest.LogCaptureFixture) -> None:
    """/readyz answered the driver's error: hosts, ports, users of the servers behind."""
    down = Unavailable("MongoDB unavailable: db-7.internal:27017 user=herald auth failed", code="store_unavailable")
    caplog.set_level(logging.WARNING, logger="herald.readiness")
    async with http_apps(failures={"ping": down}) as apps:
        for service in ("auth", "collect"):
            async with apps.client(service) as client:
                answer = await client.get("/readyz")
            assert answer.status_code == 503
            assert answer.json() == {
                "error": {
                    "code": "unavailable",
                    "message": "a dependency of this service is unavailable; the details are in its logs",
                }
            }
    assert "db-7.internal" in caplog.text  # the operator still finds it


def test_operator_and_service_tokens_shorter_than_32_characters_stop_start_up() -> None:
    cluster = {
        "HERALD_MONGO_URL": "mongodb://127.0.0.1:27017",
        "HERALD_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HERALD_AMQP_URL": "amqp://u:p@127.0.0.1:5672/",
    }
    short, long = "s" * (MIN_SECRET_LENGTH - 1), "l" * MIN_SECRET_LENGTH
    with pytest.raises(ConfigError, match="HERALD_ADMIN_TOKEN: 31 characters; use at least 32"):
        Settings.from_env("auth", {**cluster, "HERALD_ADMIN_TOKEN": short, "HERALD_SERVICE_TOKEN": long})
    with pytest.raises(ConfigError, match="HERALD_SERVICE_TOKEN: 31 characters"):
        Settings.from_env("push", {**cluster, "HERALD_SERVICE_TOKEN": short})
    with pytest.raises(ConfigError, match="HERALD_ADMIN_TOKEN"):
        Settings.from_env("standalone", {"HERALD_ADMIN_TOKEN": "admin"})
    assert Settings.from_env("auth", {**cluster, "HERALD_ADMIN_TOKEN": long, "HERALD_SERVICE_TOKEN": long})


async def test_wrong_operator_tokens_are_throttled_per_source_address() -> None:
    """Wrong operator tokens were answered 403 as fast as they came, without end."""
    async with http_apps() as apps:
        async with apps.client("auth", source="203.0.113.7", token="guess-" + "g" * 30) as guesser:
            refusals = [(await guesser.get(f"/v1/apps/{APP_ID}")).status_code for _ in range(MAX_FAILURES)]
            throttled = await guesser.get(f"/v1/apps/{APP_ID}")
            guesser.headers["authorization"] = f"Bearer {ADMIN}"
            right_token_same_source = await guesser.get(f"/v1/apps/{APP_ID}")
        async with apps.client("auth", source="198.51.100.4", token=ADMIN) as operator:
            elsewhere = await operator.get(f"/v1/apps/{APP_ID}")

    assert refusals == [403] * MAX_FAILURES
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "too_many_failures"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert right_token_same_source.status_code == 429  # the source waits; its guesses are not compared
    assert elsewhere.status_code == 200


def test_the_failure_counter_is_bounded_and_forgets_after_its_window() -> None:
    now = [0.0]
    throttle = FailureThrottle(max_failures=3, window_s=60, max_sources=100, clock=lambda: now[0])
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100  # the oldest sources were forgotten
    for _ in range(3):
        throttle.failed("192.0.2.1")
    assert throttle.blocked_for("192.0.2.1") == 60
    now[0] = 61
    assert throttle.blocked_for("192.0.2.1") == 0
