"""The console page at `/` in headless Chromium: connect with the demo app, see messages sent
over HTTP live with channel and offset, send from the page, see who is online, and resume
after a reload without losing what was sent meanwhile; the API key kept only when asked;
its layout at a desktop's and a phone's size, screenshots saved.

Skipped, saying why, only where Chromium is not installed (tests/support/browser.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_client import Publisher
from tests.support.browser import (
    VIEWPORTS,
    layout,
    needs_chromium,
    open_browser,
    screenshot,
    set_viewport,
    until,
)
from tests.support.procs import Standalone

pytestmark = needs_chromium


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    try:
        yield page
    finally:
        page.quit()


@pytest.fixture
async def demo_publisher(standalone: Standalone) -> AsyncIterator[Publisher]:
    async with Publisher(standalone.auth_url, standalone.collect_url, standalone.demo["api_key"]) as client:
        yield client


def _rows(browser: Any) -> list[tuple[str, int, str]]:
    """(channel, offset, data) of each row, oldest first."""
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#messages tr')].reverse().map(r =>"
        " [r.dataset.channel, Number(r.dataset.offset), r.querySelector('td.data').textContent])"
    )
    return [tuple(cell) for cell in cells]


def _connect(browser: Any, url: str, user: str, remember_key: bool = False) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    until(lambda: browser.find_element(By.ID, "use-demo").is_displayed(), "the demo button")
    browser.find_element(By.ID, "use-demo").click()
    until(lambda: browser.find_element(By.ID, "key").get_attribute("value"), "the demo key")
    if remember_key:
        browser.find_element(By.ID, "remember-key").click()
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "connect-button").click()
    until(lambda: f"connected as {user}" in _status(browser), f"{user} to connect")


def _status(browser: Any) -> str:
    return browser.execute_script("return document.getElementById('status').textContent")


async def test_the_console_shows_http_messages_live_and_resumes_after_a_reload(
    standalone: Standalone, browser: Any, demo_publisher: Publisher
) -> None:
    user = f"console-{uuid.uuid4().hex[:6]}"
    url = f"http://127.0.0.1:{standalone.port_base + 4}/"
    _connect(browser, url, user, remember_key=True)

    [first] = await demo_publisher.send([user], "order.shipped", {"order": 1})
    until(lambda: _rows(browser), "the first message on the page")
    assert _rows(browser) == [(f"user:{user}", first["offset"], '{"order":1}')]

    browser.get("about:blank")  # away from the page...
    [missed] = await demo_publisher.send([user], "order.shipped", {"order": 2})
    browser.get(url)  # ...and back: the page reconnects by itself and resumes
    until(lambda: _rows(browser), "the message sent while the page was away")
    await asyncio.sleep(0.5)
    assert _rows(browser) == [(f"user:{user}", missed["offset"], '{"order":2}')]
    assert missed["offset"] == first["offset"] + 1


async def test_the_console_sends_to_a_group_it_joined_and_lists_who_is_online(
    standalone: Standalone, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    user, group = f"console-{uuid.uuid4().hex[:6]}", f"ops-{uuid.uuid4().hex[:6]}"
    _connect(browser, f"http://127.0.0.1:{standalone.port_base + 4}/", user)
    until(
        lambda: browser.execute_script(f"return !!document.querySelector('#online li[data-user=\"{user}\"]')"),
        "the user in the online list",
    )

    browser.find_element(By.ID, "group").send_keys(group)
    browser.find_element(By.ID, "join").click()
    until(lambda: "joined" in browser.find_element(By.ID, "group-result").text, "the join")
    Select(browser.find_element(By.ID, "target-kind")).select_by_value("group")
    browser.find_element(By.ID, "target").send_keys(group)
    data = browser.find_element(By.ID, "data")
    data.clear()
    data.send_keys('{"alert": "disk full"}')
    browser.find_element(By.ID, "send-button").click()

    until(lambda: _rows(browser), "the group message")
    assert _rows(browser) == [(f"group:{group}", 1, '{"alert":"disk full"}')]
    assert browser.find_element(By.ID, "sent").text == f"group:{group} #1"


def _stored(browser: Any) -> str:
    """Everything the page keeps in the browser's storage, as text."""
    return browser.execute_script("return JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")


async def test_the_console_keeps_the_api_key_only_when_asked_and_resumes_once_it_is_given_again(
    standalone: Standalone, browser: Any, demo_publisher: Publisher
) -> None:
    from selenium.webdriver.common.by import By

    user = f"console-{uuid.uuid4().hex[:6]}"
    url = f"http://127.0.0.1:{standalone.port_base + 4}/"
    _connect(browser, url, user)
    key = standalone.demo["api_key"]
    assert browser.find_element(By.ID, "remember-key").is_selected() is False
    assert key not in _stored(browser)

    browser.get("about:blank")
    [missed] = await demo_publisher.send([user], "order.shipped", {"order": 3})
    browser.get(url)
    until(lambda: "enter the API key to reconnect" in _status(browser), "the page asking for the key")
    assert browser.find_element(By.ID, "key").get_attribute("value") == ""
    assert browser.find_element(By.ID, "user").get_attribute("value") == user

    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "connect-button").click()
    until(lambda: _rows(browser), "the message sent while the page was away")
    assert _rows(browser) == [(f"user:{user}", missed["offset"], '{"order":3}')]
    assert key not in _stored(browser)


def test_the_user_id_field_starts_empty_and_connect_says_it_is_needed(standalone: Standalone, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{standalone.port_base + 4}/")
    until(lambda: browser.find_element(By.ID, "use-demo").is_displayed(), "the demo button")
    field = browser.find_element(By.ID, "user")
    # Nothing that looks like a value: no value and no example in the field itself.
    assert field.get_attribute("value") == "" and not field.get_attribute("placeholder")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=user]").text == "Connect as user id (required)"

    browser.find_element(By.ID, "use-demo").click()
    until(lambda: browser.find_element(By.ID, "key").get_attribute("value"), "the demo key")
    browser.find_element(By.ID, "connect-button").click()
    assert _status(browser) == "enter the user id to connect as"
    assert browser.switch_to.active_element == field


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
async def test_the_console_fits_a_desktop_and_a_phone(
    standalone: Standalone, browser: Any, demo_publisher: Publisher, viewport: str, tmp_path: Path
) -> None:
    set_viewport(browser, viewport)
    user = f"console-{uuid.uuid4().hex[:6]}"
    _connect(browser, f"http://127.0.0.1:{standalone.port_base + 4}/", user)
    await demo_publisher.send([user], "order.shipped", {"order": 42, "note": "a message of ordinary length"})
    until(lambda: _rows(browser), "the message on the page")

    seen = layout(browser, "header", "#user", "#messages td.data", "#messages")
    shot = screenshot(browser, tmp_path, f"console-{viewport}")
    width, height = seen.viewport
    assert seen.viewport == VIEWPORTS[viewport], (seen, shot)
    assert seen.header_height <= 0.15 * height, (seen, shot)
    assert seen.input_visible and 0 <= seen.input_top and seen.input_bottom <= height, (seen, shot)
    assert seen.text_px >= 14, (seen, shot)
    assert seen.page_width <= width, (seen, shot)
