"""`herald dev` hands out keys: /demo/app is the demo app's API key, /demo/session a token
for any user id. They were served to whoever reached the port, also on 0.0.0.0 as the
Dockerfile sets. Now: loopback clients only, unless HERALD_DEMO_PUBLIC=1, and the banner
says which (issue 14)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herald.core.settings import Settings
from herald.services import standalone
from tests.support.procs import Standalone, start_standalone
from tests.support.push_http import DEMO, push_node, seen_from

PUBLIC_CLIENT = "203.0.113.50"


@pytest.mark.parametrize("path", ["/demo/app", "/demo/session?user=eve&room=lobby", "/demo/online?room=lobby"])
async def test_a_client_from_the_network_gets_no_demo_key_or_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    seen_from(monkeypatch, PUBLIC_CLIENT)
    async with push_node(tmp_path) as node, httpx.AsyncClient(base_url=node.url) as http:
        answer = await http.get(path)
        config = await http.get("/console/config")

    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "demo_loopback_only"
    assert DEMO["api_key"] not in answer.text
    assert config.json()["demo"] is False  # the console does not try


@pytest.mark.parametrize("loopback", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_a_loopback_client_gets_the_demo_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback: str
) -> None:
    seen_from(monkeypatch, loopback)
    async with push_node(tmp_path) as node, httpx.AsyncClient(base_url=node.url) as http:
        answer = await http.get("/demo/app")
        config = await http.get("/console/config")
    assert answer.status_code == 200 and answer.json() == DEMO
    assert config.json()["demo"] is True


@pytest.mark.parametrize("address", ["10.0.0.8", "::ffff:192.168.1.2", "fe80::1", "", "not-an-address"])
async def test_private_and_odd_peer_addresses_are_not_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    seen_from(monkeypatch, address)
    async with push_node(tmp_path) as node, httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/demo/app")).status_code == 403


async def test_herald_demo_public_serves_every_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_from(monkeypatch, PUBLIC_CLIENT)
    async with push_node(tmp_path, {"HERALD_DEMO_PUBLIC": "1"}) as node, httpx.AsyncClient(base_url=node.url) as http:
        answer = await http.get("/demo/app")
    assert answer.status_code == 200 and answer.json() == DEMO


def test_the_banner_says_who_the_demo_answers(tmp_path: Path) -> None:
    env = {"HERALD_DATA_DIR": str(tmp_path), "HERALD_HOST": "0.0.0.0"}
    for public, expected in (("0", "answers loopback clients only"), ("1", "WARNING: HERALD_DEMO_PUBLIC=1")):
        per_role = standalone.dev_settings(Settings.from_env("standalone", {**env, "HERALD_DEMO_PUBLIC": public}), 0)
        assert expected in standalone.banner(per_role, DEMO)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    process = start_standalone(tmp_path_factory.mktemp("demo-dev"), {"HERALD_HOST": "0.0.0.0"})
    try:
        yield process
    finally:
        process.process.stop()


async def test_herald_dev_on_all_interfaces_still_serves_this_machine_and_says_so(dev: Standalone) -> None:
    async with httpx.AsyncClient(base_url=dev.push_http_url) as http:
        app = await http.get("/demo/app")
        session = await http.get("/demo/session", params={"user": "ann", "room": "lobby"})
    assert app.status_code == 200 and app.json()["api_key"] == dev.demo["api_key"]
    assert session.status_code == 200 and session.json()["token"]
    assert "/demo/* (the demo app's key, tokens for any user) answers loopback clients only" in (
        dev.process.log_path.read_text()
    )
