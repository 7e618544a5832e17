"""A page whose connect tokens last 3 s stays connected for six of their lifetimes through
in-band refreshes (`expiring` → `refresh` → `refreshed`), in headless Chromium: one
connection, no reconnect, and every message sent meanwhile arrives.

The page's token function waits for the next token the test hands it, as a page would
fetch one from its own backend; each lasts 3 s. The test hands the next one as soon as the
page took the last, and sends a message every second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_client import Publisher
from tests.support.browser import needs_chromium, open_browser, until
from tests.support.procs import Standalone

pytestmark = needs_chromium
TOKEN_TTL_S = 3
HELD_S = 6.0 * TOKEN_TTL_S
SEND_EVERY_S = 1.0

PAGE = """<!doctype html>
<ul id="log"></ul>
<script src="http://127.0.0.1:PUSH/herald.js"></script>
<script>
  window.tokens = [];
  window.received = [];
  window.connects = 0;
  window.refreshes = 0;
  const nextToken = async () => {
    while (!window.tokens.length) await new Promise((resolve) => setTimeout(resolve, 50));
    return window.tokens.shift();
  };
  const herald = new Herald("ws://127.0.0.1:PUSH/ws", { token: nextToken });
  herald.on("connected", () => { window.connects += 1; });
  herald.on("refreshed", () => { window.refreshes += 1; });
  herald.on("message", (m) => { window.received.push(m.offset); });
  herald.connect();
</script>
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    try:
        yield page
    finally:
        page.quit()


async def test_a_page_with_three_second_tokens_stays_connected_through_in_band_refreshes(
    standalone: Standalone, publisher: Publisher, browser: Any, tmp_path: Path
) -> None:
    user = f"refresh-{uuid.uuid4().hex[:6]}"
    (tmp_path / "refresh.html").write_text(PAGE.replace("PUSH", str(standalone.port_base + 4)))
    browser.get((tmp_path / "refresh.html").as_uri())

    async def hand_a_token() -> None:
        token = await publisher.token(user, ttl_s=TOKEN_TTL_S)
        browser.execute_script("window.tokens.push(arguments[0])", token)

    await hand_a_token()
    until(lambda: browser.execute_script("return window.connects") == 1, "the first connection")
    sent: list[int] = []
    next_send = time.monotonic()
    deadline = next_send + HELD_S
    while time.monotonic() < deadline:
        if browser.execute_script("return window.tokens.length") == 0:
            await hand_a_token()  # ready before the next `expiring` asks for it
        if time.monotonic() >= next_send:
            [message] = await publisher.send([user], "tick", len(sent))
            sent.append(message["offset"])
            next_send += SEND_EVERY_S
        await asyncio.sleep(0.2)

    until(lambda: browser.execute_script("return window.received.length") >= len(sent), "every message")
    assert browser.execute_script("return window.received") == sent
    assert browser.execute_script("return window.connects") == 1, "the page reconnected instead of refreshing"
    refreshes = browser.execute_script("return window.refreshes")
    assert refreshes >= HELD_S / TOKEN_TTL_S - 1, f"only {refreshes} refreshes in {HELD_S:.0f} s"
