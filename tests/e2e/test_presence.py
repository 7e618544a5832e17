"""Presence, online lists, kick and revocation in `herald dev`."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from herald_client import Publisher
from tests.support.procs import Standalone
from tests.support.ws import close_code, next_frame, open_ws

CLOSE_WAIT_S = 1.0  # kick and revoke must close within a second


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_presence_lists_each_connection_with_its_node_device_and_start(
    standalone: Standalone, publisher: Publisher
) -> None:
    ann = _name("ann")
    phone = await open_ws(standalone.ws_url, await publisher.token(ann, device="phone"))
    laptop = await open_ws(standalone.ws_url, await publisher.token(ann, device="phone"), device="laptop")
    welcomes = [await next_frame(phone, "welcome"), await next_frame(laptop, "welcome")]
    presence = await publisher.presence(ann)
    assert presence["online"] is True
    by_conn = {c["conn_id"]: c for c in presence["connections"]}
    assert set(by_conn) == {w["conn_id"] for w in welcomes}
    assert by_conn[welcomes[0]["conn_id"]]["device"] == "phone"
    assert by_conn[welcomes[1]["conn_id"]]["device"] == "laptop"
    assert all(c["node"] and c["since"] > 0 for c in presence["connections"])
    await phone.close()
    await laptop.close()


async def test_a_user_without_connections_is_offline(publisher: Publisher) -> None:
    nobody = _name("nobody")
    assert await publisher.presence(nobody) == {"user_id": nobody, "online": False, "connections": []}


async def test_online_counts_connections_per_user_and_in_total(standalone: Standalone, publisher: Publisher) -> None:
    group, ann, bob = _name("g"), _name("ann"), _name("bob")
    await publisher.join(group, ann)
    await publisher.join(group, bob)
    sockets = [
        await open_ws(standalone.ws_url, await publisher.token(ann)),
        await open_ws(standalone.ws_url, await publisher.token(ann)),
        await open_ws(standalone.ws_url, await publisher.token(bob)),
    ]
    for ws in sockets:
        await next_frame(ws, "welcome")
    in_group = await publisher.online(group=group)
    assert in_group["users"] == [{"user_id": ann, "connections": 2}, {"user_id": bob, "connections": 1}]
    assert (in_group["total_users"], in_group["total_connections"]) == (2, 3)
    app_wide = {u["user_id"]: u["connections"] for u in (await publisher.online())["users"]}
    assert app_wide[ann] == 2 and app_wide[bob] == 1
    await sockets[2].close()
    await asyncio.sleep(0.2)
    assert [u["user_id"] for u in (await publisher.online(group=group))["users"]] == [ann]
    for ws in sockets[:2]:
        await ws.close()


async def test_group_members_say_who_is_online(standalone: Standalone, publisher: Publisher) -> None:
    group, ann, bob = _name("g"), _name("ann"), _name("bob")
    await publisher.join(group, ann)
    await publisher.join(group, bob)
    ws = await open_ws(standalone.ws_url, await publisher.token(bob))
    await next_frame(ws, "welcome")
    members = await publisher.members(group)
    assert members["members"] == sorted(
        [
            {"user_id": ann, "online": False, "connections": 0},
            {"user_id": bob, "online": True, "connections": 1},
        ],
        key=lambda m: m["user_id"],
    )
    await ws.close()


async def test_kick_closes_every_connection_of_the_user_with_4003_and_they_may_reconnect(
    standalone: Standalone, publisher: Publisher
) -> None:
    ann, bob = _name("ann"), _name("bob")
    token = await publisher.token(ann)
    sockets = [await open_ws(standalone.ws_url, token), await open_ws(standalone.ws_url, token)]
    other = await open_ws(standalone.ws_url, await publisher.token(bob))
    for ws in [*sockets, other]:
        await next_frame(ws, "welcome")
    kicked = await publisher.kick(ann)
    assert kicked == {"user_id": ann, "nodes": 1}
    assert [await close_code(ws, CLOSE_WAIT_S) for ws in sockets] == [4003, 4003]
    assert other.close_code is None
    again = await open_ws(standalone.ws_url, token)
    await next_frame(again, "welcome")
    await again.close()
    await other.close()


async def test_revoking_a_token_closes_only_its_connections_and_refuses_it_next_time(
    standalone: Standalone, publisher: Publisher
) -> None:
    ann = _name("ann")
    revoked, kept = await publisher.token(ann), await publisher.token(ann)
    ws_revoked = await open_ws(standalone.ws_url, revoked)
    ws_kept = await open_ws(standalone.ws_url, kept)
    await next_frame(ws_revoked, "welcome")
    await next_frame(ws_kept, "welcome")
    await publisher.revoke(revoked)
    assert await close_code(ws_revoked, CLOSE_WAIT_S) == 4003
    assert ws_kept.close_code is None
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(standalone.ws_url, revoked)
    assert refused.value.response.status_code == 401
    await ws_kept.close()


async def test_revoking_a_users_tokens_closes_all_their_connections(
    standalone: Standalone, publisher: Publisher
) -> None:
    ann = _name("ann")
    tokens = [await publisher.token(ann), await publisher.token(ann)]
    sockets = [await open_ws(standalone.ws_url, token) for token in tokens]
    for ws in sockets:
        await next_frame(ws, "welcome")
    await publisher.revoke_user(ann)
    assert [await close_code(ws, CLOSE_WAIT_S) for ws in sockets] == [4003, 4003]
    for token in tokens:
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(standalone.ws_url, token)
        assert refused.value.response.status_code == 401
