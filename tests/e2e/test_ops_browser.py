"""The /ops page in headless Chromium: the operator enters the token, messages flow through
`herald dev`, and the page draws the node, its connections and live charts.

The load is small by default (a test must stay fast); ``HERALD_OPS_LOAD_S`` and
``HERALD_OPS_LOAD_RATE`` make it longer or heavier for a look at the screenshot.
Skipped, saying why, only where Chromium is not installed (tests/support/browser.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_client import Publisher
from tests.support.browser import WAIT_S, needs_chromium, open_browser, screenshot, set_viewport
from tests.support.procs import Standalone
from tests.support.traffic import produce, subscribe, users

pytestmark = needs_chromium

LOAD_S = float(os.environ.get("HERALD_OPS_LOAD_S", "3"))
LOAD_RATE = int(os.environ.get("HERALD_OPS_LOAD_RATE", "100"))


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    try:
        yield page
    finally:
        page.quit()


async def _until(browser: Any, check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll the page without blocking the event loop: the test's subscribers keep answering
    the node's pings meanwhile. On a timeout, say what the charts held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    charts = browser.execute_script("return JSON.stringify(history)")
    raise AssertionError(f"timed out waiting for {what}; the page's chart data: {charts}")


def _text(browser: Any, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element_id}').textContent")


def _drawn(browser: Any, canvas_id: str) -> dict[str, Any]:
    """How many data points the chart drew and how many pixels of its first series' colour
    are in the plot (the legend above it left out)."""
    return browser.execute_script(
        """
        const c = document.getElementById(arguments[0]), g = c.getContext("2d");
        // The first series' colour (COLORS[0] in ops.html), anti-aliased edges aside.
        const top = Math.ceil(Number(c.dataset.top) * (window.devicePixelRatio || 1));
        const d = g.getImageData(0, top, c.width, c.height - top).data;
        const close = (a, b) => Math.abs(a - b) < 40;
        const near = (i, r, gr, b) => close(d[i], r) && close(d[i + 1], gr) && close(d[i + 2], b);
        let inked = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && near(i, 0x2e, 0x6f, 0xdb)) inked++;
        return { points: Number(c.dataset.points), series: c.dataset.series, inked };
        """,
        canvas_id,
    )


def _node_connections(browser: Any, node_id: str) -> int:
    return browser.execute_script(
        "const row = document.querySelector(`#nodes tr[data-node='${arguments[0]}']`);"
        "return row ? Number(row.children[2].textContent.replace(/[^0-9]/g, '')) : -1;",
        node_id,
    )


async def test_the_operator_sees_the_node_and_live_charts_while_messages_flow(
    standalone: Standalone, browser: Any, publisher: Publisher, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    set_viewport(browser, "desktop")
    browser.get(f"{standalone.push_http_url}/ops")
    browser.find_element(By.ID, "token").send_keys(standalone.admin_token)
    browser.find_element(By.ID, "watch-button").click()
    await _until(browser, lambda: _text(browser, "status").startswith("watching"), "the first snapshot")

    names = users(4, "ops-page")
    audience = await subscribe(publisher, {user: [standalone.ws_url] for user in names})
    try:
        tally = await produce(publisher, names, rate=LOAD_RATE, seconds=LOAD_S)
        await audience.wait_for(tally, timeout_s=15)
        assert not audience.missing(tally), audience.report(tally)

        node = f"127.0.0.1:{standalone.port_base + 4}"
        connected = len(names)
        await _until(browser, lambda: _node_connections(browser, node) >= connected, "the node's connections")
        await _until(browser, lambda: _drawn(browser, "chart-rates")["inked"] > 20, "the message rates drawn")
        await _until(browser, lambda: _drawn(browser, "chart-latency")["inked"] > 20, "the latency drawn")
        shown = {name: _text(browser, f"t-{name}") for name in ("nodes", "connections", "routed", "delivered", "p99")}
        shot = screenshot(browser, tmp_path, "ops-desktop")
    finally:
        await audience.close()

    print(f"ops page during {tally.accepted_count} messages over {LOAD_S:g} s: {shown}")
    rates, latency = _drawn(browser, "chart-rates"), _drawn(browser, "chart-latency")
    assert rates["series"] == "routed (cluster),accepted here,written here", shot
    assert rates["points"] > 0 and latency["points"] > 0, (rates, latency, shot)
    assert shown["nodes"] == "1/1", (shown, shot)
    assert shown["p99"] != "-", (shown, shot)
    assert browser.execute_script("return localStorage.getItem('herald-ops-token')") is None
