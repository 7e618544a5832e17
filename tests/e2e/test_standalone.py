"""`herald dev` end to end: app, token, connect, send, receive — one process, no servers."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from herald_client import HeraldAPIError, Operator, Publisher
from tests.support.procs import Standalone
from tests.support.ws import collect_messages, next_frame, no_message_within, open_ws


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_a_connected_user_receives_a_message_sent_to_them(standalone: Standalone, publisher: Publisher) -> None:
    user = _user()
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    welcome = await next_frame(ws, "welcome")
    assert welcome["user_id"] == user and welcome["conn_id"]
    [accepted] = await publisher.send([user], "order.shipped", {"order": 42})
    frame = await next_frame(ws, "message")
    assert frame == {
        "type": "message",
        "channel": f"user:{user}",
        "offset": accepted["offset"],
        "id": accepted["id"],
        "event": "order.shipped",
        "data": {"order": 42},
        "ts": frame["ts"],
    }
    await ws.close()


async def test_two_devices_of_one_user_both_receive(standalone: Standalone, publisher: Publisher) -> None:
    user = _user()
    phone = await open_ws(standalone.ws_url, await publisher.token(user), how="header")
    laptop = await open_ws(standalone.ws_url, await publisher.token(user), how="subprotocol")
    await next_frame(phone, "welcome")
    await next_frame(laptop, "welcome")
    await publisher.send([user], "ping.me", "hello")
    assert (await next_frame(phone, "message"))["data"] == "hello"
    assert (await next_frame(laptop, "message"))["data"] == "hello"
    await phone.close()
    await laptop.close()


async def test_each_user_gets_exactly_their_own_messages_in_offset_order(
    standalone: Standalone, publisher: Publisher
) -> None:
    alice, bob = _user(), _user()
    ws_a = await open_ws(standalone.ws_url, await publisher.token(alice))
    ws_b = await open_ws(standalone.ws_url, await publisher.token(bob))
    await next_frame(ws_a, "welcome")
    await next_frame(ws_b, "welcome")
    for n in range(10):
        await publisher.send([alice] if n % 2 else [bob], "n", n)
    got_a = await collect_messages(ws_a, 5)
    got_b = await collect_messages(ws_b, 5)
    assert [f["data"] for f in got_a] == [1, 3, 5, 7, 9]
    assert [f["data"] for f in got_b] == [0, 2, 4, 6, 8]
    assert [f["offset"] for f in got_a] == [1, 2, 3, 4, 5]
    assert await no_message_within(ws_a, 0.3)
    await ws_a.close()
    await ws_b.close()


async def test_a_bad_token_gets_401_and_no_socket(standalone: Standalone) -> None:
    with pytest.raises(InvalidStatus) as info:
        await open_ws(standalone.ws_url, "ht_not-a-real-token")
    assert info.value.response.status_code == 401


async def test_a_missing_token_gets_401(standalone: Standalone, http: httpx.AsyncClient) -> None:
    response = await http.get(
        standalone.push_http_url + "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


async def test_an_expired_token_gets_401(standalone: Standalone, publisher: Publisher) -> None:
    token = await publisher.token(_user(), ttl_s=1)
    await asyncio.sleep(1.2)
    with pytest.raises(InvalidStatus) as info:
        await open_ws(standalone.ws_url, token)
    assert info.value.response.status_code == 401


async def test_a_revoked_token_cannot_connect(standalone: Standalone, publisher: Publisher) -> None:
    token = await publisher.token(_user())
    await publisher.revoke(token)
    with pytest.raises(InvalidStatus) as info:
        await open_ws(standalone.ws_url, token)
    assert info.value.response.status_code == 401


async def test_garbage_frames_get_error_frames_and_the_connection_lives_on(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    await next_frame(ws, "welcome")
    for garbage in ["{{{", "[]", '{"type":"teleport"}', '{"type":"ack","channel":"user:x","offset":"no"}']:
        await ws.send(garbage)
        assert (await next_frame(ws, "error"))["code"]
    await ws.send(b"\x00\xff")
    assert (await next_frame(ws, "error"))["code"] == "binary_frame"
    await ws.send('{"type":"ping"}')
    assert await next_frame(ws) == {"type": "pong"}
    await publisher.send([user], "still.here")
    assert (await next_frame(ws, "message"))["event"] == "still.here"
    await ws.close()


async def test_acking_another_users_channel_is_refused(standalone: Standalone, publisher: Publisher) -> None:
    ws = await open_ws(standalone.ws_url, await publisher.token(_user()))
    await next_frame(ws, "welcome")
    await ws.send('{"type":"ack","channel":"user:somebody-else","offset":1}')
    assert (await next_frame(ws, "error"))["code"] == "forbidden_channel"
    await ws.close()


async def test_acks_become_the_welcome_positions_of_the_next_connection(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    token = await publisher.token(user)
    ws = await open_ws(standalone.ws_url, token)
    await next_frame(ws, "welcome")
    await publisher.send([user], "a")
    frame = await next_frame(ws, "message")
    await ws.send(f'{{"type":"ack","channel":"user:{user}","offset":{frame["offset"]}}}')
    await ws.close()
    positions: dict[str, int] = {}
    for _ in range(50):  # acks are flushed about once a second
        again = await open_ws(standalone.ws_url, token)
        positions = (await next_frame(again, "welcome"))["positions"]
        await again.close()
        if positions.get(f"user:{user}"):
            break
        await asyncio.sleep(0.1)
    assert positions == {f"user:{user}": frame["offset"], "broadcast": 0}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 422, "invalid_request"),
        (b"{}", 422, "invalid_request"),
        (b'{"to": {"users": []}, "event": "e"}', 422, "invalid_request"),
        (b'{"to": {"users": ["ok"]}, "event": "has space"}', 400, "invalid_event"),
        (b'{"to": {"users": ["bad id!"]}, "event": "e"}', 400, "invalid_user_id"),
        (b'{"to": {"users": ["ok"]}, "event": "e", "surprise": 1}', 422, "invalid_request"),
        (b'{"to": {"users": ["ok"]}, "event": "e", "ttl_s": -5}', 422, "invalid_request"),
    ],
)
async def test_garbage_message_bodies_get_clear_json_errors(
    standalone: Standalone, http: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    response = await http.post(
        standalone.collect_url + "/v1/messages",
        content=body,
        headers={"Authorization": f"Bearer {standalone.demo['api_key']}", "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_oversized_data_is_refused_with_413(standalone: Standalone, publisher: Publisher) -> None:
    with pytest.raises(HeraldAPIError) as info:
        await publisher.send([_user()], "big", "x" * 70_000)
    assert info.value.status == 413 and info.value.code == "payload_too_large"


async def test_an_unknown_api_key_gets_401(standalone: Standalone) -> None:
    async with Publisher(standalone.auth_url, standalone.collect_url, "hk_nope") as stranger:
        with pytest.raises(HeraldAPIError) as info:
            await stranger.send(["x"], "e")
    assert info.value.status == 401


async def test_creating_an_app_needs_the_operator_token(standalone: Standalone) -> None:
    async with Operator(standalone.auth_url, "wrong") as impostor:
        with pytest.raises(HeraldAPIError) as info:
            await impostor.create_app("evil")
    assert info.value.status == 403
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app("shop")
    assert created["app_id"].startswith("app_") and created["api_key"]


async def test_a_rotated_key_stops_working(standalone: Standalone) -> None:
    async with Operator(standalone.auth_url, standalone.admin_token) as operator:
        created = await operator.create_app("rotating")
        rotated = await operator.rotate_key(created["app_id"])
    async with Publisher(standalone.auth_url, standalone.collect_url, rotated["api_key"]) as fresh:
        assert await fresh.token("u1")
    async with Publisher(standalone.auth_url, standalone.collect_url, created["api_key"]) as old:
        with pytest.raises(HeraldAPIError) as info:
            await old.token("u1")
    assert info.value.status == 401


async def test_a_message_can_be_read_back_with_its_status(publisher: Publisher) -> None:
    [accepted] = await publisher.send([_user()], "stored", {"k": "v"})
    message = await publisher.message(accepted["id"])
    assert message["data"] == {"k": "v"} and message["offset"] == accepted["offset"]
    assert message["status"] in ("accepted", "dispatched")


async def test_history_lists_a_channel_in_offset_order_from_a_position(publisher: Publisher) -> None:
    user = _user()
    for n in range(5):
        await publisher.send([user], "h", n)
    page = await publisher.history(f"user:{user}", since=2, limit=2)
    assert [m["data"] for m in page["messages"]] == [2, 3]
    assert page["next"] == 4


async def test_history_of_a_malformed_channel_is_a_400(publisher: Publisher) -> None:
    with pytest.raises(HeraldAPIError) as info:
        await publisher.history("nowhere")
    assert info.value.status == 400 and info.value.code == "invalid_channel"


async def test_an_unknown_message_is_a_404(publisher: Publisher) -> None:
    with pytest.raises(HeraldAPIError) as info:
        await publisher.message("0" * 32)
    assert info.value.status == 404


async def test_batch_items_are_validated_on_their_own(standalone: Standalone, publisher: Publisher) -> None:
    user = _user()
    ws = await open_ws(standalone.ws_url, await publisher.token(user))
    await next_frame(ws, "welcome")
    results = await publisher.send_batch(
        [
            {"to": {"users": [user]}, "event": "one", "data": 1},
            {"to": {"users": [user]}, "event": "bad event"},
            {"nonsense": True},
            {"to": {"users": [user]}, "event": "two", "data": 2},
        ]
    )
    assert [sorted(r) for r in results] == [["messages"], ["error"], ["error"], ["messages"]]
    assert results[1]["error"]["code"] == "invalid_event"
    got = await collect_messages(ws, 2)
    assert [f["data"] for f in got] == [1, 2]
    assert got[1]["offset"] == got[0]["offset"] + 1
    await ws.close()


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_result(publisher: Publisher) -> None:
    user = _user()
    first = await publisher.send([user], "once", idempotency_key="k-1")
    again = await publisher.send([user], "once", idempotency_key="k-1")
    assert again == first
    assert len((await publisher.history(f"user:{user}"))["messages"]) == 1


async def test_openapi_and_health_are_served(standalone: Standalone, http: httpx.AsyncClient) -> None:
    for url in (standalone.auth_url, standalone.collect_url):
        assert (await http.get(url + "/openapi.json")).json()["info"]["title"].startswith("Herald")
        assert (await http.get(url + "/docs")).status_code == 200
        assert (await http.get(url + "/healthz")).json() == {"status": "ok"}
    assert (await http.get(standalone.push_http_url + "/healthz")).json() == {"status": "ok"}
    assert (await http.get(standalone.push_http_url + "/readyz")).status_code == 200


async def test_the_push_node_serves_the_browser_client_and_the_chat_page(
    standalone: Standalone, http: httpx.AsyncClient
) -> None:
    script = await http.get(f"{standalone.push_http_url}/herald.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "class Herald" in script.text
    page = await http.get(f"{standalone.push_http_url}/chat")
    assert page.status_code == 200 and '<script src="/herald.js">' in page.text


async def test_the_demo_session_refuses_a_bad_room_with_a_json_error(
    standalone: Standalone, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{standalone.push_http_url}/demo/session", params={"user": "ann", "room": "no room"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_group"
    missing = await http.get(f"{standalone.push_http_url}/demo/online")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_parameter"
