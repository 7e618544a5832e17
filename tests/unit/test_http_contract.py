"""Regressions the OpenAPI fuzzing (tests/fuzz) found: what the schemas promise is what the
handlers do. In process, no servers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Response
from pydantic import ValidationError

from herald.core.errors import BadRequest
from herald.core.model import check_group, check_user_id, parse_channel
from herald.core.permissions import check_patterns
from herald.services.auth.models import ConfigPatch, NewToken
from herald.services.collect.message_models import CHANNEL_PATTERN, SendMessage
from herald.web.api import create_api
from tests.support.http_apps import http_apps


async def test_405_names_every_method_of_the_path() -> None:
    """Starlette's 405 named only the first route matching the path, and Herald's error
    handler then dropped even that: a 405 must carry ``Allow`` with all of them."""
    api = create_api("Herald test", "two routes, one path")

    @api.get("/v1/things/{name}")
    async def read(name: str) -> dict[str, str]:
        return {"name": name}

    @api.patch("/v1/things/{name}")
    async def change(name: str) -> dict[str, str]:
        return {"name": name}

    @api.delete("/v1/things/{name}", status_code=204, response_class=Response)
    async def remove(name: str) -> Response:
        return Response(status_code=204)

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.request("TRACE", "/v1/things/a")
        single = await client.post("/healthz")
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in answer.headers["allow"].split(",")} == {"GET", "PATCH", "DELETE"}
    assert single.status_code == 405 and single.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "body",
    [
        {"rotate_webhook_secret": "no"},  # was read as True: a non-empty string
        {"rotate_webhook_secret": 0},
        {"limits": {"frames_per_s": False}},  # was read as 0.0
        {"limits": {"burst": "5"}},  # was read as 5
        {"limits": {"max_batch": True}},
        {"limits": {"burst": 2.5}},
    ],
)
def test_app_settings_refuse_what_the_schema_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ConfigPatch.model_validate(body)


def test_json_integers_may_be_written_with_a_fraction_of_zero() -> None:
    """JSON Schema's integer includes 5.0; strict validation must not refuse it."""
    assert NewToken.model_validate({"user_id": "7", "ttl_s": 60.0}).ttl_s == 60
    assert ConfigPatch.model_validate({"limits": {"burst": 10.0}}).limits.burst == 10
    message = SendMessage.model_validate({"to": {"users": ["7"]}, "event": "e", "ttl_s": 30.0})
    assert message.ttl_s == 30 and isinstance(message.ttl_s, int)
    with pytest.raises(ValidationError):
        NewToken.model_validate({"user_id": "7", "ttl_s": "60"})
    with pytest.raises(ValidationError):
        SendMessage.model_validate({"to": {"broadcast": "true"}, "event": "e"})


@pytest.mark.parametrize("url", ["http://a\x85b", "http://a\u00a0b", "http://a b", "https://bücher.example/"])
def test_webhook_urls_are_ascii_as_the_schema_says(url: str) -> None:
    """The schema's `\\S` (ECMA-262) and pydantic's (Rust) disagreed on U+0085: a URL the
    schema allowed was refused. URLs are ASCII now, in both."""
    with pytest.raises(ValidationError):
        ConfigPatch.model_validate({"webhook_url": url})
    assert ConfigPatch.model_validate({"webhook_url": "https://hooks.example/h?a=1&b=%C3%BC"}).webhook_url


@pytest.mark.parametrize(
    "check, value",
    [
        (check_user_id, "7\n"),
        (check_group, "ops\n"),
        (parse_channel, "user:7\n"),
        (parse_channel, "group:ops\n"),
        (check_patterns, ["user:*\n"]),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_name(check: Any, value: Any) -> None:
    """Python's `$` matches before a final newline: "7\\n" passed as a user id."""
    with pytest.raises(BadRequest):
        check(value)


def test_openapi_declares_the_checked_patterns() -> None:
    """What the handlers check with 400s is in the documents, so clients and fuzzers see it."""
    schema = SendMessage.model_json_schema()
    to = schema["$defs"]["To"]
    assert len(to["oneOf"]) == 3
    assert schema["properties"]["event"]["pattern"]
    assert to["properties"]["users"]["anyOf"][0]["items"]["pattern"]
    assert CHANNEL_PATTERN.startswith("^(broadcast|user:")


async def test_the_schema_bounds_the_integers_of_data_to_what_the_codec_carries() -> None:
    """The fuzzer sent -63389300056827216527360 in `data`, which the schema allowed and
    collect refused (400 invalid_data): the document now says integers within 64 bits."""
    async with http_apps() as apps, apps.client("collect") as collect:
        document = (await collect.get("/openapi.json")).json()
        inside = await collect.post("/v1/messages", json={"to": {"users": ["u"]}, "event": "e", "data": 2**64 - 1})
        outside = await collect.post("/v1/messages", json={"to": {"users": ["u"]}, "event": "e", "data": [2**64]})
    data = document["components"]["schemas"]["SendMessage"]["properties"]["data"]
    assert data["allOf"] == [{"$ref": "#/components/schemas/JsonData"}]
    [integer] = [kind for kind in document["components"]["schemas"]["JsonData"]["anyOf"] if kind["type"] == "integer"]
    assert (integer["minimum"], integer["maximum"]) == (-(2**63), 2**64 - 1)
    assert inside.status_code == 202
    assert (outside.status_code, outside.json()["error"]["code"]) == (400, "invalid_data")
