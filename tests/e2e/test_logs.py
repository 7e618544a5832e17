"""Logs are JSON lines an operator's pipeline can filter by app, message and connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald_client import Publisher
from tests.support.procs import Standalone, start_standalone
from tests.support.ws import collect_messages, next_frame, open_ws


@pytest.fixture(scope="module")
def debug_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    herald = start_standalone(tmp_path_factory.mktemp("debug"), {"HERALD_LOG_LEVEL": "DEBUG"})
    try:
        yield herald
    finally:
        herald.process.stop()


def _lines(standalone: Standalone) -> list[dict[str, object]]:
    text = Path(standalone.process.log_path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_a_message_can_be_followed_through_the_logs_by_its_id(debug_standalone: Standalone) -> None:
    demo = debug_standalone.demo
    async with Publisher(debug_standalone.auth_url, debug_standalone.collect_url, demo["api_key"]) as publisher:
        ws = await open_ws(debug_standalone.ws_url, await publisher.token("log-reader"))
        welcome = await next_frame(ws, "welcome")
        [accepted] = await publisher.send(["log-reader"], "logged", {"n": 1})
        await collect_messages(ws, 1)
        await ws.close()
    await asyncio.sleep(0.3)

    about = [line for line in _lines(debug_standalone) if line.get("message_id") == accepted["id"]]

    assert [line["msg"].split()[0] for line in about] == ["accepted", "routed", "wrote"]
    assert all(line["app_id"] == demo["app_id"] for line in about)
    assert about[-1]["conn_id"] == welcome["conn_id"]
    connection = [line["msg"] for line in _lines(debug_standalone) if line.get("conn_id") == welcome["conn_id"]]
    assert connection[0] == "connected" and connection[-1] == "disconnected"


async def test_every_log_line_carries_time_level_and_logger(debug_standalone: Standalone) -> None:
    # The file also holds the banner `herald dev` prints on stdout; logs go to stderr.
    lines = _lines(debug_standalone)

    assert lines and all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
