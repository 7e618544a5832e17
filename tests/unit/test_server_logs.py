"""The push server logs request targets without their query string (a token may be there)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from herald.services.push.http_answers import path_only
from herald.services.push.server import PushServer


def test_a_logged_target_keeps_its_path_and_drops_its_query() -> None:
    assert path_only("/ws?token=ht_secret&device=phone") == "/ws"
    assert path_only("/ops/snapshot") == "/ops/snapshot"


async def test_an_unexpected_failure_is_logged_without_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    async def failing(_request: Request, _address: str) -> None:
        raise RuntimeError("surprise")

    server = SimpleNamespace(_process_request=failing, _handshake_over=lambda _sock: None)
    sock = SimpleNamespace(gone=True, address="127.0.0.1")
    with caplog.at_level(logging.ERROR, logger="herald.push"):
        await PushServer._open(server, sock, Request("/ws?token=ht_secret", Headers()))  # type: ignore[arg-type]
    assert "could not answer a request for /ws" in caplog.text
    assert "ht_secret" not in caplog.text
