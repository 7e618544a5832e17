"""The fast ``POST /v1/messages`` route (services/collect/send_route.py): it answers plainly
valid sends itself, and every other request gets exactly the answer the documented
FastAPI route gives (status, error code, details, Retry-After). In process, no servers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from herald.adapters.bus.memory import MemoryBus
from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.credentials import secret_hash
from herald.core.model import App
from herald.core.settings import Settings
from herald.messaging.accept import Acceptor
from herald.services.collect.app import create_app
from herald.services.collect.send_route import PATH, decoded
from tests.support.hot_routes import Pair, with_and_without

KEY = "hk_send-route-test-key"
APP_ID = "app_00000000000000f1"
JSON = {"content-type": "application/json"}
GOOD = b'{"to":{"users":["7"]},"event":"order.shipped","data":{"n":1}}'


@contextlib.asynccontextmanager
async def apps(env: Mapping[str, str] | None = None) -> AsyncIterator[Pair]:
    settings = Settings.from_env(
        "standalone", {"HERALD_ADMIN_TOKEN": "a" * 40, "HERALD_SERVICE_TOKEN": "s" * 40, **(env or {})}
    )
    store = SqliteStore(":memory:")
    await store.start()
    await store.insert_app(App(APP_ID, "send-route", time.time()))
    await store.replace_api_key(APP_ID, secret_hash(KEY))
    directory, bus = MemoryDirectory(), MemoryBus()
    fast = create_app(settings, store, Acceptor(store, bus), directory, bus)
    documented = create_app(settings, store, Acceptor(store, bus), directory, bus)
    try:
        async with with_and_without(fast, documented, PATH, settings.body_limit, "http://collect") as pair:
            yield pair
    finally:
        await store.close()


async def _both(pair: Pair, body: bytes, headers: Mapping[str, str]) -> tuple[httpx.Response, httpx.Response]:
    return await pair.both(PATH, body, dict(headers))


AUTH = {"authorization": f"Bearer {KEY}", **JSON}


async def test_a_plainly_valid_send_is_answered_by_the_fast_route() -> None:
    async with apps() as pair:
        answer = await pair.fast.post("/v1/messages", content=GOOD, headers=AUTH)
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    [accepted] = answer.json()["messages"]
    assert (accepted["channel"], accepted["offset"], accepted["online"]) == ("user:7", 1, False)
    assert pair.endpoint.handed_on == 0


async def test_a_key_with_spaces_around_it_is_read_as_fastapis_bearer_scheme_reads_it() -> None:
    async with apps() as pair:
        fast, documented = await _both(pair, GOOD, {"authorization": f"bearer   {KEY} ", **JSON})
    assert fast.status_code == documented.status_code == 202
    assert pair.endpoint.handed_on == 0


async def test_the_fast_route_answers_as_the_documented_one_with_the_same_headers() -> None:
    async with apps() as pair:
        fast, documented = await _both(pair, GOOD, AUTH)
    assert (fast.status_code, documented.status_code) == (202, 202)
    assert fast.json()["messages"][0].keys() == documented.json()["messages"][0].keys()
    for name in ("content-type", "x-content-type-options", "referrer-policy"):
        assert fast.headers.get(name) == documented.headers.get(name)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"to":{"users":["7"]},"event":', AUTH, 422, "invalid_request"),  # bad JSON
        (b'{"to":{"users":["7"]},"event":"e"', {"authorization": "Bearer nope"}, 401, "bad_api_key"),
        (b"", AUTH, 422, "invalid_request"),  # no body
        (b'{"to":{"users":"7"},"event":"e"}', AUTH, 422, "invalid_request"),  # wrong type
        (b'{"to":{"users":["7"]},"event":5}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":["7"]},"event":"e","ttl_s":"60"}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":["7"]},"event":"e","ttl_s":true}', AUTH, 422, "invalid_request"),
        (b'{"to":{"broadcast":"yes"},"event":"e"}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":["7"]},"event":"e","colour":"red"}', AUTH, 422, "invalid_request"),  # unknown field
        (b'{"to":{"users":["7"],"cc":["8"]},"event":"e"}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":[]},"event":"e"}', AUTH, 422, "invalid_request"),  # out of bounds
        (b'{"to":{"users":["7"]},"event":""}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":["7"]},"event":"e","ttl_s":0}', AUTH, 422, "invalid_request"),
        (b'{"to":{"users":["7"]},"event":"e","idempotency_key":""}', AUTH, 422, "invalid_request"),
        (b'{"to":{"group":"' + b"g" * 129 + b'"},"event":"e"}', AUTH, 422, "invalid_request"),
        (GOOD, {"authorization": f"Bearer {KEY}", "content-type": "text/plain"}, 422, "invalid_request"),
        (GOOD, {"authorization": f"Bearer {KEY}"}, 422, "invalid_request"),  # no Content-Type
        (GOOD, JSON, 401, "missing_credential"),
        (GOOD, {"authorization": f"Basic {KEY}", **JSON}, 401, "missing_credential"),
        (GOOD, {"authorization": "Bearer ", **JSON}, 401, "missing_credential"),
        (GOOD, {"authorization": "Bearer hk_wrong", **JSON}, 401, "bad_api_key"),
        (b'{"to":{"users":["no spaces"]},"event":"e"}', AUTH, 400, "invalid_user_id"),
        (b'{"to":{"users":["7"]},"event":"no spaces"}', AUTH, 400, "invalid_event"),
        (b'{"to":{"users":["7"],"group":"g"},"event":"e"}', AUTH, 400, "invalid_recipients"),
        (b'{"to":{"broadcast":false},"event":"e"}', AUTH, 400, "invalid_recipients"),
        (b'{"to":{"users":["7"]},"event":"e","data":' + b"1" * 30 + b"}", AUTH, 400, "invalid_data"),
        (b'{"to":{"users":["7"]},"event":"e","data":"' + b"x" * 70_000 + b'"}', AUTH, 413, "payload_too_large"),
    ],
)
async def test_an_invalid_send_gets_the_documented_routes_error(
    body: bytes, headers: Mapping[str, str], status: int, code: str
) -> None:
    async with apps() as pair:
        fast, documented = await _both(pair, body, headers)
    assert (fast.status_code, fast.json()["error"]["code"]) == (status, code)
    assert fast.json() == documented.json()
    assert fast.headers["content-type"] == documented.headers["content-type"] == "application/json"


async def test_a_body_over_the_limit_is_a_413_before_the_fast_route_reads_it() -> None:
    body = b'{"to":{"users":["7"]},"event":"e","data":"' + b"x" * 5000 + b'"}'
    async with apps({"HERALD_MAX_BODY": "4096"}) as pair:
        fast, documented = await _both(pair, body, AUTH)
    assert (fast.status_code, fast.json()["error"]["code"]) == (413, "payload_too_large")
    assert fast.json() == documented.json()


async def test_a_rate_limited_send_is_a_429_with_retry_after() -> None:
    async with apps({"HERALD_RATE_PER_S": "1"}) as pair:
        first = await pair.fast.post("/v1/messages", content=GOOD, headers=AUTH)
        refused = await pair.fast.post("/v1/messages", content=GOOD, headers=AUTH)
    assert first.status_code == 202
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert pair.endpoint.handed_on == 0


async def test_a_retry_with_an_idempotency_key_gets_the_first_result_on_the_fast_route() -> None:
    body = b'{"to":{"users":["7"]},"event":"e","idempotency_key":"k1"}'
    async with apps() as pair:
        first = await pair.fast.post("/v1/messages", content=body, headers=AUTH)
        again = await pair.fast.post("/v1/messages", content=body, headers=AUTH)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()


async def test_what_the_fast_route_does_not_read_is_still_sent_by_the_documented_route() -> None:
    """json.loads takes a 60.0 ttl (an integer, for JSON) and a lone surrogate escape; msgspec
    does not, so those go to the documented route and get its answer."""
    async with apps() as pair:
        ttl, documented_ttl = await _both(pair, b'{"to":{"users":["7"]},"event":"e","ttl_s":60.0}', AUTH)
        lone, documented_lone = await _both(pair, b'{"to":{"users":["7"]},"event":"e","data":"\\ud800"}', AUTH)
    assert ttl.status_code == documented_ttl.status_code == 202
    assert lone.status_code == documented_lone.status_code
    assert pair.endpoint.handed_on == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"to":{"users":["7"]},"event":"e","ttl_s":60.0}',  # JSON integers may be written 60.0
        b'{"to":{"users":["7"]},"event":"e","data":NaN}',
        b'{"to":{"users":["7"]},"event":"e"} trailing',
        b'{"to":{"users":["7"]},"event":"e","data":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_the_decoder_leaves_what_it_does_not_read_exactly_to_the_documented_route(body: bytes) -> None:
    assert decoded(body) is None


def test_the_decoder_keeps_the_last_of_duplicate_keys_and_big_integers_as_json_loads_does() -> None:
    item = decoded(b'{"to":{"users":["7"]},"event":"a","event":"b","data":{"n":1,"n":18446744073709551616}}')
    assert item is not None
    assert (item.event, item.data) == ("b", {"n": 2**64})


async def test_a_crash_on_the_fast_route_is_a_logged_500_naming_the_route(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="herald.http")

    async def crash(*_: Any) -> None:
        raise RuntimeError("a bug")

    async with apps() as pair:
        monkeypatch.setattr(SqliteStore, "insert_messages", crash)
        fast, documented = await _both(pair, GOOD, AUTH)
    assert (fast.status_code, fast.json()["error"]["code"]) == (500, "internal")
    assert fast.json() == documented.json()
    assert fast.headers["x-content-type-options"] == "nosniff"
    assert "unhandled error on POST /v1/messages" in caplog.text
