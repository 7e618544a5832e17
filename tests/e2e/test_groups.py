"""Groups and broadcast in `herald dev`: membership, live join and leave, offsets, resume."""

from __future__ import annotations

import uuid

from herald_client import HeraldAPIError, Publisher
from tests.support.procs import Standalone
from tests.support.ws import collect_messages, next_frame, no_message_within, open_ws


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_a_group_message_reaches_every_members_connections_and_no_one_else(
    standalone: Standalone, publisher: Publisher
) -> None:
    group, ann, bob, eve = _name("g"), _name("ann"), _name("bob"), _name("eve")
    await publisher.join(group, ann)
    await publisher.join(group, bob)
    sockets = {user: await open_ws(standalone.ws_url, await publisher.token(user)) for user in (ann, bob, eve)}
    ann_phone = await open_ws(standalone.ws_url, await publisher.token(ann))
    for ws in [*sockets.values(), ann_phone]:
        await next_frame(ws, "welcome")
    accepted = await publisher.send_to_group(group, "room.said", {"text": "hi"})
    assert accepted["channel"] == f"group:{group}" and accepted["offset"] == 1
    for ws in (sockets[ann], sockets[bob], ann_phone):
        frame = await next_frame(ws, "message")
        assert (frame["channel"], frame["offset"], frame["data"]) == (f"group:{group}", 1, {"text": "hi"})
    assert await no_message_within(sockets[eve], 0.5)
    for ws in [*sockets.values(), ann_phone]:
        await ws.close()


async def test_a_live_connection_follows_a_join_and_a_leave_without_reconnecting(
    standalone: Standalone, publisher: Publisher
) -> None:
    group, ann = _name("g"), _name("ann")
    ws = await open_ws(standalone.ws_url, await publisher.token(ann))
    await next_frame(ws, "welcome")
    await publisher.send_to_group(group, "before.join")
    joined = await publisher.join(group, ann)
    assert joined == {"group": group, "user_id": ann, "joined": True, "joined_after": 1}
    await publisher.send_to_group(group, "after.join")
    frame = await next_frame(ws, "message")
    assert (frame["event"], frame["offset"]) == ("after.join", 2)
    await publisher.leave(group, ann)
    await publisher.send_to_group(group, "after.leave")
    assert await no_message_within(ws, 0.5)
    await ws.close()


async def test_joining_twice_keeps_the_first_membership(publisher: Publisher) -> None:
    group, ann = _name("g"), _name("ann")
    first = await publisher.join(group, ann)
    await publisher.send_to_group(group, "between")
    again = await publisher.join(group, ann)
    assert again == {**first, "joined": False}


async def test_a_new_member_does_not_get_the_groups_history_but_history_lists_it(
    standalone: Standalone, publisher: Publisher
) -> None:
    group, ann = _name("g"), _name("ann")
    await publisher.send_to_group(group, "old")
    await publisher.join(group, ann)
    ws = await open_ws(standalone.ws_url, await publisher.token(ann))
    welcome = await next_frame(ws, "welcome")
    assert welcome["positions"][f"group:{group}"] == 1
    assert await no_message_within(ws, 0.5)
    history = await publisher.history(f"group:{group}")
    assert [m["event"] for m in history["messages"]] == ["old"]
    await ws.close()


async def test_group_messages_missed_while_offline_arrive_on_resume(
    standalone: Standalone, publisher: Publisher
) -> None:
    group, ann = _name("g"), _name("ann")
    await publisher.join(group, ann)
    token = await publisher.token(ann)
    ws = await open_ws(standalone.ws_url, token)
    await next_frame(ws, "welcome")
    await publisher.send_to_group(group, "seen")
    seen = await next_frame(ws, "message")
    await ws.close()
    for index in range(3):
        await publisher.send_to_group(group, f"missed.{index}")
    ws = await open_ws(standalone.ws_url, token)
    await ws.send(f'{{"type":"resume","positions":{{"group:{group}":{seen["offset"]}}}}}')
    frames = await collect_messages(ws, 3)
    assert [(f["channel"], f["offset"]) for f in frames] == [(f"group:{group}", n) for n in (2, 3, 4)]
    await ws.close()


async def test_a_broadcast_reaches_every_connected_user_of_the_app(
    standalone: Standalone, publisher: Publisher
) -> None:
    users = [_name("u") for _ in range(3)]
    sockets = [await open_ws(standalone.ws_url, await publisher.token(user)) for user in users]
    for ws in sockets:
        await next_frame(ws, "welcome")
    accepted = await publisher.broadcast("maintenance", {"at": "22:00"})
    assert accepted["channel"] == "broadcast"
    for ws in sockets:
        frame = await next_frame(ws, "message")
        assert (frame["channel"], frame["offset"], frame["event"]) == ("broadcast", accepted["offset"], "maintenance")
    for ws in sockets:
        await ws.close()


async def test_to_takes_exactly_one_kind_of_recipient(publisher: Publisher) -> None:
    for to in ({"users": ["a"], "group": "g"}, {}, {"broadcast": False}, {"group": "bad name!"}):
        try:
            await publisher._send(to, "e", None)
        except HeraldAPIError as exc:
            assert exc.status in (400, 422), exc
        else:
            raise AssertionError(f"{to} was accepted")


async def test_a_group_name_out_of_its_alphabet_is_refused(publisher: Publisher) -> None:
    try:
        await publisher.join("no spaces", "ann")
    except HeraldAPIError as exc:
        assert (exc.status, exc.code) == (400, "invalid_group")
    else:
        raise AssertionError("joined a group with a space in its name")
