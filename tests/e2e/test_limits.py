"""Per-app limits in `herald dev`, set by the operator through auth."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import InvalidStatus

from herald_client import HeraldAPIError, Operator, Publisher
from tests.support.procs import Standalone
from tests.support.ws import next_frame, open_ws


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def limited(standalone: Standalone) -> AsyncIterator[tuple[Operator, str, Publisher]]:
    """A fresh app, so limits set here touch no other test."""
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app(_name("limited"))
        async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as publisher:
            yield operator, created["app_id"], publisher


async def _wait_for_config(publisher: Publisher) -> None:
    """Services cache an app's config for up to 2 s."""
    await asyncio.sleep(2.2)


async def test_messages_over_the_apps_rate_get_429_with_retry_after(
    standalone: Standalone, limited: tuple[Operator, str, Publisher]
) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"messages_per_s": 1, "burst": 3})
    await _wait_for_config(publisher)
    for _ in range(3):
        await publisher.send(["ann"], "within.burst")
    with pytest.raises(HeraldAPIError) as refused:
        await publisher.send(["ann"], "over")
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1


async def test_a_payload_over_the_apps_limit_gets_413(limited: tuple[Operator, str, Publisher]) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"max_payload": 100})
    await _wait_for_config(publisher)
    await publisher.send(["ann"], "small", "x" * 50)
    with pytest.raises(HeraldAPIError) as refused:
        await publisher.send(["ann"], "large", "x" * 200)
    assert refused.value.status == 413


async def test_a_batch_over_the_apps_limit_gets_413(limited: tuple[Operator, str, Publisher]) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"max_batch": 2})
    await _wait_for_config(publisher)
    item = {"to": {"users": ["ann"]}, "event": "e"}
    assert len(await publisher.send_batch([item, item])) == 2
    with pytest.raises(HeraldAPIError) as refused:
        await publisher.send_batch([item, item, item])
    assert (refused.value.status, refused.value.code) == (413, "batch_too_large")


async def test_a_connection_over_the_per_user_limit_gets_429(
    standalone: Standalone, limited: tuple[Operator, str, Publisher]
) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"connections_per_user": 2})
    await _wait_for_config(publisher)
    token = await publisher.token("ann")
    sockets = [await open_ws(standalone.ws_url, token) for _ in range(2)]
    for ws in sockets:
        await next_frame(ws, "welcome")
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(standalone.ws_url, token)
    assert refused.value.response.status_code == 429
    assert b"too_many_connections" in refused.value.response.body
    for ws in sockets:
        await ws.close()


async def test_joining_more_groups_than_the_limit_gets_409(limited: tuple[Operator, str, Publisher]) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"groups_per_user": 2})
    await _wait_for_config(publisher)
    await publisher.join("one", "ann")
    await publisher.join("two", "ann")
    await publisher.join("two", "ann")  # already a member: not a new group
    with pytest.raises(HeraldAPIError) as refused:
        await publisher.join("three", "ann")
    assert (refused.value.status, refused.value.code) == (409, "too_many_groups")


async def test_a_client_sending_frames_too_fast_gets_an_error_frame_and_stays_connected(
    standalone: Standalone, limited: tuple[Operator, str, Publisher]
) -> None:
    operator, app_id, publisher = limited
    await operator.configure(app_id, limits={"frames_per_s": 5})
    await _wait_for_config(publisher)
    ws = await open_ws(standalone.ws_url, await publisher.token("ann"))
    await next_frame(ws, "welcome")
    for _ in range(40):
        await ws.send('{"type":"ping"}')
    error = await next_frame(ws, "error")
    assert error["code"] == "rate_limited"
    await asyncio.sleep(1.0)
    await ws.send('{"type":"ping"}')
    await next_frame(ws, "pong")
    await ws.close()


async def test_limits_are_validated(limited: tuple[Operator, str, Publisher]) -> None:
    operator, app_id, _ = limited
    with pytest.raises(HeraldAPIError) as refused:
        await operator.configure(app_id, limits={"messages_per_s": -1})
    assert refused.value.status == 422
