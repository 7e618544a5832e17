"""Receipts: whether recipients were online, and what was delivered and acked, per device."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from herald.core import codec
from herald_client import Publisher
from tests.support.procs import Standalone
from tests.support.ws import next_frame, open_ws


def _user() -> str:
    return f"rc-{uuid.uuid4().hex[:8]}"


async def _status_until(publisher: Publisher, message_id: str, wanted: str) -> dict[str, Any]:
    """Receipts travel in batches about once a second; wait (bounded) for the status."""
    message: dict[str, Any] = {}
    for _ in range(50):
        message = await publisher.message(message_id)
        if message["status"] == wanted:
            break
        await asyncio.sleep(0.1)
    return message


async def test_the_202_says_whether_each_recipient_was_online(standalone: Standalone, publisher: Publisher) -> None:
    here, away = _user(), _user()
    ws = await open_ws(standalone.ws_url, await publisher.token(here))
    await next_frame(ws, "welcome")
    accepted = await publisher.send([here, away], "who")
    assert {a["channel"]: a["online"] for a in accepted} == {f"user:{here}": True, f"user:{away}": False}
    await ws.close()


async def test_status_becomes_delivered_then_acked_with_per_device_detail(
    standalone: Standalone, publisher: Publisher
) -> None:
    user = _user()
    phone = await open_ws(standalone.ws_url, await publisher.token(user), device="phone")
    laptop = await open_ws(standalone.ws_url, await publisher.token(user), device="laptop")
    phone_id = (await next_frame(phone, "welcome"))["conn_id"]
    laptop_id = (await next_frame(laptop, "welcome"))["conn_id"]
    [accepted] = await publisher.send([user], "tracked")
    frame = await next_frame(phone, "message")
    await next_frame(laptop, "message")

    delivered = await _status_until(publisher, accepted["id"], "delivered")
    assert delivered["status"] == "delivered"
    assert {d["device"]: d["conn_id"] for d in delivered["deliveries"]} == {"phone": phone_id, "laptop": laptop_id}
    assert all(d["acked_at"] is None for d in delivered["deliveries"])

    await phone.send(codec.dumps_text({"type": "ack", "channel": frame["channel"], "offset": frame["offset"]}))
    acked = await _status_until(publisher, accepted["id"], "acked")
    assert acked["status"] == "acked"
    acked_by = {d["device"]: d["acked_at"] is not None for d in acked["deliveries"]}
    assert acked_by == {"phone": True, "laptop": False}
    await phone.close()
    await laptop.close()
