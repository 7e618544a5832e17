"""The operator and service credentials (``secret_dependency``): checked on the event loop.

FastAPI runs a plain-function dependency on a worker thread for every request; push nodes'
introspection requests paid that hand-off on each connect batch."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi import Depends

from herald.web import api as web_api


def _app() -> web_api.HeraldApi:
    app = web_api.create_api("test", "a route behind a fixed credential")
    check = web_api.secret_dependency("s3cret", "service (TEST)", "TestToken")

    @app.get("/guarded", dependencies=[Depends(check)])
    async def guarded() -> dict[str, bool]:
        return {"ok": True}

    return app


async def _get(app: web_api.HeraldApi, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/guarded", headers={"Authorization": f"Bearer {token}"})


async def test_the_credential_is_checked_on_the_event_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = web_api.require_secret

    def recording(*args: object, **kwargs: object) -> None:
        threads.append(threading.current_thread())
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(web_api, "require_secret", recording)
    response = await _get(_app(), "s3cret")
    assert response.status_code == 200
    assert threads == [threading.current_thread()]


async def test_a_wrong_credential_is_still_refused_with_a_json_error() -> None:
    response = await _get(_app(), "guess")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "bad_credential"
