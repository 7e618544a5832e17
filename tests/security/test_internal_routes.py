"""Internal endpoints seen from outside (issue 14): deploy/nginx.conf sent /v1/introspect
(the service-token endpoint push nodes use) to the public, a push node's /readyz answered
raw driver errors, and wrong operator tokens at /ops/snapshot were answered as fast as
they came."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest

from herald.core.errors import Unavailable
from herald.web.throttle import MAX_FAILURES
from tests.support.push_http import ADMIN, push_node, seen_from

NGINX = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
_LOCATION = re.compile(r"^\s*location\s+(=|~\*|~|\^~)?\s*(\S+)\s*\{(.*?)^\s*\}", re.MULTILINE | re.DOTALL)


def _locations() -> list[tuple[str, str, str]]:
    """(modifier, pattern, body) of each location of the server block, in order."""
    return [(m[1] or "", m[2], m[3]) for m in _LOCATION.finditer(NGINX.read_text()) if not m[2].startswith("@")]


def route(path: str) -> str:
    """Where nginx sends ``path``: its location selection (exact, then the longest prefix
    unless ^~, then the first matching regex, else the longest prefix), reduced to the
    location's proxy_pass upstream, or `return <status>`."""
    locations = _locations()
    chosen = next((loc for loc in locations if loc[0] == "=" and loc[1] == path), None)
    if chosen is None:
        prefixes = [loc for loc in locations if loc[0] in ("", "^~") and path.startswith(loc[1])]
        longest = max(prefixes, key=lambda loc: len(loc[1]), default=None)
        if longest is not None and longest[0] == "^~":
            chosen = longest
        else:
            regexes = [loc for loc in locations if loc[0] in ("~", "~*")]
            flags = lambda loc: re.IGNORECASE if loc[0] == "~*" else 0  # noqa: E731
            chosen = next((loc for loc in regexes if re.search(loc[1], path, flags(loc))), longest)
    assert chosen is not None, path
    proxied = re.search(r"proxy_pass\s+http://(\w+)", chosen[2])
    if proxied:
        return proxied[1]
    returned = re.search(r"return\s+(\d+)", chosen[2])
    assert returned, chosen
    return f"return {returned[1]}"


@pytest.mark.parametrize("path", ["/v1/introspect", "/v1/introspect/batch", "/v1/introspect/"])
def test_nginx_does_not_route_introspection_to_the_public(path: str) -> None:
    assert route(path) == "return 404"


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/v1/revocations", "herald_auth"),
        ("/v1/tokens", "herald_auth"),
        ("/v1/apps/app_1/keys", "herald_auth"),
        ("/v1/users/ann/tokens", "herald_auth"),
        ("/v1/messages/batch", "herald_collect"),
        ("/v1/users/ann/presence", "herald_collect"),
        ("/ws", "herald_push"),
        ("/chat", "herald_push"),
    ],
)
def test_nginx_still_routes_the_public_apis(path: str, upstream: str) -> None:
    """The matcher above is right about what nginx does send on (the compose twin checks
    the same routes against a real nginx)."""
    assert route(path) == upstream


async def test_a_push_nodes_readyz_keeps_the_drivers_error_for_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = Unavailable("Redis unavailable: redis://:hunter2@10.4.4.4:6379/0 refused", code="directory_unavailable")
    caplog.set_level(logging.WARNING, logger="herald.readiness")
    async with push_node(tmp_path, failures={"directory.ping": down}) as node:
        async with httpx.AsyncClient(base_url=node.url) as http:
            answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"] == {
        "code": "unavailable",
        "message": "a dependency of this service is unavailable; the details are in its logs",
    }
    assert "hunter2" not in answer.text and "10.4.4.4" not in answer.text
    assert "10.4.4.4" in caplog.text


async def test_wrong_operator_tokens_at_the_ops_snapshot_are_throttled_per_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_from(monkeypatch, "203.0.113.9")
    async with push_node(tmp_path) as node, httpx.AsyncClient(base_url=node.url) as http:
        wrong = {"authorization": "Bearer " + "w" * 40}
        refusals = [(await http.get("/ops/snapshot", headers=wrong)).status_code for _ in range(MAX_FAILURES)]
        throttled = await http.get("/ops/snapshot", headers=wrong)
        still_throttled = await http.get("/ops/snapshot", headers={"authorization": f"Bearer {ADMIN}"})
        seen_from(monkeypatch, "198.51.100.2")
        operator = await http.get("/ops/snapshot", headers={"authorization": f"Bearer {ADMIN}"})

    assert refusals == [401] * MAX_FAILURES
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too_many_failures"
    assert still_throttled.status_code == 429
    assert operator.status_code == 200
