"""Tenant isolation: another app's ids reach nothing of this app, on every route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from herald_client import HeraldAPIError, Operator, Publisher
from tests.support.procs import Standalone
from tests.support.ws import next_frame, no_message_within, open_ws


@pytest.fixture
async def two_apps(standalone: Standalone) -> AsyncIterator[tuple[Publisher, Publisher]]:
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        a = await operator.create_app(f"a-{uuid.uuid4().hex[:6]}")
        b = await operator.create_app(f"b-{uuid.uuid4().hex[:6]}")
    async with (
        Publisher(standalone.auth_url, standalone.collect_url, a["api_key"]) as app_a,
        Publisher(standalone.auth_url, standalone.collect_url, b["api_key"]) as app_b,
    ):
        yield app_a, app_b


async def _refused(call, status: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HeraldAPIError) as refused:
        await call
    assert refused.value.status == status


async def test_the_same_ids_in_another_app_reach_nothing_of_this_one(
    standalone: Standalone, two_apps: tuple[Publisher, Publisher]
) -> None:
    app_a, app_b = two_apps
    user, group = "shared-user", "shared-group"
    await app_a.join(group, user)
    token_a = await app_a.token(user)
    ws_a = await open_ws(standalone.ws_url, token_a)
    await next_frame(ws_a, "welcome")

    # Messages: to the same user id, the same group, broadcast.
    await app_b.send([user], "from.b")
    await app_b.send_to_group(group, "from.b")
    await app_b.broadcast("from.b")
    assert await no_message_within(ws_a, 0.5)

    # Reads: message by id, history, members, online, presence.
    [sent_a] = await app_a.send([user], "from.a")
    assert (await next_frame(ws_a, "message"))["event"] == "from.a"
    await _refused(app_b.message(sent_a["id"]), 404)
    assert [m["event"] for m in (await app_b.history(f"user:{user}"))["messages"]] == ["from.b"]
    assert (await app_b.members(group))["members"] == []
    assert (await app_b.online())["users"] == []
    assert (await app_b.online(group=group))["users"] == []
    assert (await app_b.presence(user))["online"] is False

    # Writes on the other app's people: kick, revoke, leave, join.
    assert (await app_b.kick(user))["nodes"] == 0
    await _refused(app_b.revoke(token_a), 404)
    await app_b.revoke_user(user)
    await app_b.leave(group, user)
    await app_b.join(group, "b-only")
    await app_a.send_to_group(group, "still.member")
    frame = await next_frame(ws_a, "message")
    assert (frame["event"], ws_a.close_code) == ("still.member", None)
    assert [m["user_id"] for m in (await app_a.members(group))["members"]] == [user]

    # Acks: a resume or ack naming a channel of the other app is only ever about this app.
    await ws_a.close()
