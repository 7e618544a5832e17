"""auth's introspection as push nodes use it: one token, or the tokens of many handshakes at once."""

from __future__ import annotations

import json

import httpx

from herald_client import Publisher
from tests.support.procs import Standalone


def _service_token(standalone: Standalone) -> str:
    return json.loads((standalone.data_dir / "dev-secrets.json").read_text())["service_token"]


async def _batch(
    standalone: Standalone, http: httpx.AsyncClient, body: object, bearer: str | None = None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {bearer or _service_token(standalone)}"}
    return await http.post(f"{standalone.auth_url}/v1/introspect/batch", json=body, headers=headers)


async def test_a_batch_is_answered_token_by_token_in_order(
    standalone: Standalone, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    ann = await publisher.token("ann", device="phone")
    bob = await publisher.token("bob")

    answer = await _batch(standalone, http, {"tokens": [bob, "not-a-token", ann, bob]})

    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["active"], r["user_id"]) for r in results] == [
        (True, "bob"),
        (False, None),
        (True, "ann"),
        (True, "bob"),
    ]
    assert results[2]["device"] == "phone"
    assert results[0]["app_id"] == standalone.demo["app_id"]


async def test_a_revoked_token_is_inactive_in_a_batch(
    standalone: Standalone, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    token = await publisher.token("carol")
    await publisher.revoke(token)

    answer = await _batch(standalone, http, {"tokens": [token]})

    assert answer.json()["results"] == [
        {"active": False, "app_id": None, "user_id": None, "exp": None, "device": None, "publish": []}
    ]


async def test_a_batch_agrees_with_single_introspection(
    standalone: Standalone, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    token = await publisher.token("dan")
    headers = {"authorization": f"Bearer {_service_token(standalone)}"}

    single = await http.post(f"{standalone.auth_url}/v1/introspect", json={"token": token}, headers=headers)
    batch = await _batch(standalone, http, {"tokens": [token]})

    assert batch.json()["results"] == [single.json()]


async def test_a_batch_takes_at_most_256_tokens(standalone: Standalone, http: httpx.AsyncClient) -> None:
    assert (await _batch(standalone, http, {"tokens": ["t"] * 256})).status_code == 200
    too_many = await _batch(standalone, http, {"tokens": ["t"] * 257})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"]


async def test_an_empty_batch_or_an_empty_token_is_refused(standalone: Standalone, http: httpx.AsyncClient) -> None:
    assert (await _batch(standalone, http, {"tokens": []})).status_code == 422
    assert (await _batch(standalone, http, {"tokens": [""]})).status_code == 422


async def test_a_batch_needs_the_service_token(
    standalone: Standalone, publisher: Publisher, http: httpx.AsyncClient
) -> None:
    assert (await _batch(standalone, http, {"tokens": ["t"]}, bearer=standalone.demo["api_key"])).status_code == 403
