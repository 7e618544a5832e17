"""The fast ``POST /v1/introspect/batch`` route (services/auth/introspect_route.py): it
answers a push node's plainly valid batch itself, with what the documented FastAPI route
answers, and every other request gets that route's answer (status, error code, the wrong
token throttle). In process, no servers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.settings import Settings
from herald.services.auth.app import create_app
from herald.services.auth.introspect_route import PATH, decoded
from herald.web.throttle import MAX_FAILURES
from tests.support.hot_routes import Pair, with_and_without

SERVICE = "s" * 40
OPERATOR = "a" * 40
JSON = {"content-type": "application/json"}
AUTH = {"authorization": f"Bearer {SERVICE}", **JSON}


@dataclass
class Issued:
    pair: Pair
    tokens: list[str]  # active: ann's, then bob's

    async def both(self, body: bytes, headers: Mapping[str, str]) -> tuple[httpx.Response, httpx.Response]:
        return await self.pair.both(PATH, body, dict(headers))


@contextlib.asynccontextmanager
async def apps() -> AsyncIterator[Issued]:
    settings = Settings.from_env("standalone", {"HERALD_ADMIN_TOKEN": OPERATOR, "HERALD_SERVICE_TOKEN": SERVICE})
    store = SqliteStore(":memory:")
    await store.start()
    directory, bus = MemoryDirectory(), MemoryBus()
    fast = create_app(settings, store, directory, bus)
    documented = create_app(settings, store, directory, bus)
    try:
        async with with_and_without(fast, documented, PATH, settings.body_limit, "http://auth") as pair:
            created = await pair.documented.post(
                "/v1/apps", json={"name": "introspect"}, headers={"authorization": f"Bearer {OPERATOR}"}
            )
            key = created.json()["api_key"]
            tokens = []
            for user in ("ann", "bob"):
                answer = await pair.documented.post(
                    "/v1/tokens", json={"user_id": user}, headers={"authorization": f"Bearer {key}"}
                )
                tokens.append(answer.json()["token"])
            yield Issued(pair, tokens)
    finally:
        await store.close()


async def test_a_push_nodes_batch_is_answered_by_the_fast_route_as_the_documented_one() -> None:
    async with apps() as issued:
        body = f'{{"tokens":["{issued.tokens[0]}","ht_unknown","{issued.tokens[1]}"]}}'.encode()
        fast, documented = await issued.both(body, AUTH)
        handed_on = issued.pair.endpoint.handed_on
    assert (fast.status_code, documented.status_code) == (200, 200)
    assert fast.json() == documented.json()
    assert [(r["active"], r["user_id"]) for r in fast.json()["results"]] == [
        (True, "ann"),
        (False, None),
        (True, "bob"),
    ]
    assert handed_on == 0
    for name in ("content-type", "x-content-type-options", "referrer-policy"):
        assert fast.headers.get(name) == documented.headers.get(name)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"tokens":["ht_x"]', AUTH, 422, "invalid_request"),  # bad JSON
        (b"", AUTH, 422, "invalid_request"),
        (b'{"tokens":[]}', AUTH, 422, "invalid_request"),  # out of bounds
        (b'{"tokens":[""]}', AUTH, 422, "invalid_request"),
        (b'{"tokens":["' + b"t" * 513 + b'"]}', AUTH, 422, "invalid_request"),
        (b'{"tokens":[' + b",".join([b'"ht_x"'] * 257) + b"]}", AUTH, 422, "invalid_request"),
        (b'{"tokens":"ht_x"}', AUTH, 422, "invalid_request"),  # wrong type
        (b'{"tokens":[5]}', AUTH, 422, "invalid_request"),
        (b'{"tokens":["ht_x"],"more":1}', AUTH, 422, "invalid_request"),  # unknown field
        (b'{"tokens":["ht_x"]}', {"authorization": f"Bearer {SERVICE}", "content-type": "text/plain"}, 422, None),
        (b'{"tokens":["ht_x"]}', JSON, 401, "missing_credential"),
        (b'{"tokens":["ht_x"]}', {"authorization": f"Bearer {OPERATOR}", **JSON}, 403, "bad_credential"),
    ],
)
async def test_anything_else_gets_the_documented_routes_answer(
    body: bytes, headers: Mapping[str, str], status: int, code: str | None
) -> None:
    async with apps() as issued:
        fast, documented = await issued.both(body, headers)
        handed_on = issued.pair.endpoint.handed_on
    assert fast.status_code == documented.status_code == status
    assert fast.json() == documented.json()
    if code is not None:
        assert fast.json()["error"]["code"] == code
    assert handed_on == 1


async def test_a_source_throttled_for_wrong_tokens_is_refused_even_with_the_right_one() -> None:
    async with apps() as issued:
        wrong = {"authorization": "Bearer not-the-service-token", **JSON}
        for _ in range(MAX_FAILURES):
            await issued.pair.fast.post(PATH, content=b'{"tokens":["ht_x"]}', headers=wrong)
        answer = await issued.pair.fast.post(
            PATH, content=f'{{"tokens":["{issued.tokens[0]}"]}}'.encode(), headers=AUTH
        )
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "too_many_failures"
    assert "retry-after" in answer.headers


@pytest.mark.parametrize(
    "body",
    [b'{"tokens":["ht_a","ht_b"]}', b'{"tokens": ["ht_a"] }', b'{"tokens":["ht_a"],"tokens":["ht_b"]}'],
)
def test_the_decoder_reads_what_pydantic_reads(body: bytes) -> None:
    assert decoded(body) == json.loads(body)["tokens"]
