"""The chat page in a real browser: headless Chromium, two independent browsers in one room,
and its layout at a desktop's and a phone's size, screenshots saved.

Skipped, saying why, only where Chromium is not installed (tests/support/browser.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
def browsers() -> Iterator[tuple[Any, Any]]:
    """Two browsers with profiles of their own: two people, not two tabs of one."""
    first = open_browser()
    try:
        second = open_browser()
        try:
            yield first, second
        finally:
            second.quit()
    finally:
        first.quit()


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    try:
        yield page
    finally:
        page.quit()


def _join(browser: Any, url: str, name: str, room: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.ID, "name").send_keys(name)
    room_input = browser.find_element(By.ID, "room")
    room_input.clear()
    room_input.send_keys(room)
    browser.find_element(By.CSS_SELECTOR, "#join button").click()
    until(lambda: "connected as" in browser.find_element(By.ID, "status").text, f"{name} to connect")


def _say(browser: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "text").send_keys(text)
    browser.find_element(By.ID, "send").click()


def _lines(browser: Any) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#log li')].map(li =>"
        " li.querySelector('.who').textContent + ': ' + li.querySelector('.text').textContent)"
    )


def _people(browser: Any) -> str:
    return browser.execute_script("return document.getElementById('people').textContent")


def test_two_browsers_chat_in_one_room_see_each_other_and_resume_after_a_reload(
    standalone: Standalone, browsers: tuple[Any, Any]
) -> None:
    ann, bob = browsers
    url = f"http://127.0.0.1:{standalone.port_base + 4}/chat"
    room = f"room-{uuid.uuid4().hex[:6]}"

    _join(ann, url, "ann", room)
    _say(ann, "first, before bob came")
    until(lambda: "ann: first, before bob came" in _lines(ann), "ann's own message")

    _join(bob, url, "bob", room)
    until(lambda: "ann: first, before bob came" in _lines(bob), "history on join")
    until(lambda: "ann" in _people(bob) and "bob" in _people(bob), "presence of both")

    _say(bob, "hi ann")
    until(lambda: "bob: hi ann" in _lines(ann), "bob's message at ann")

    bob.get("about:blank")  # bob leaves the page...
    _say(ann, "while you were away")
    until(lambda: "ann: while you were away" in _lines(ann), "ann's message")
    bob.get(url)  # ...and comes back: the page rejoins and resumes from where it was
    until(lambda: "ann: while you were away" in _lines(bob), "the message sent while bob was away")
    time.sleep(0.5)
    assert _lines(bob) == ["ann: while you were away"], _lines(bob)
    _say(bob, "back")
    until(lambda: "bob: back" in _lines(ann), "bob's message after the reload")
    assert _lines(ann) == [
        "ann: first, before bob came",
        "bob: hi ann",
        "ann: while you were away",
        "bob: back",
    ]


def _check_layout(browser: Any, directory: Path, viewport: str, name: str) -> None:
    seen = layout(browser, "header", "#text", "#log li .text", "#log")
    shot = screenshot(browser, directory, name)
    width, height = seen.viewport
    # A page wider than a phone makes the browser zoom out, and the viewport grows with it.
    assert seen.viewport == VIEWPORTS[viewport], (seen, shot)
    assert seen.header_height <= 0.15 * height, (seen, shot)
    assert seen.log_height >= 0.6 * height, (seen, shot)
    assert seen.input_visible and 0 <= seen.input_top and seen.input_bottom <= height, (seen, shot)
    assert seen.text_px >= 14, (seen, shot)
    assert seen.page_width <= width, (seen, shot)


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_conversation_gets_the_screen_and_the_input_stays_in_view(
    standalone: Standalone, browser: Any, viewport: str, tmp_path: Path
) -> None:
    set_viewport(browser, viewport)
    room = f"room-{uuid.uuid4().hex[:6]}"
    _join(browser, f"http://127.0.0.1:{standalone.port_base + 4}/chat", "carol", room)
    _say(browser, "the first line, alone in the room")
    until(lambda: len(_lines(browser)) == 1, "the first line on the page")
    _check_layout(browser, tmp_path, viewport, f"chat-{viewport}-one-line")

    said = [f"line {n}: the conversation should fill the screen, not the header" for n in range(30)]
    for text in said:
        _say(browser, text)
    until(lambda: len(_lines(browser)) == 1 + len(said), "every line on the page")
    _check_layout(browser, tmp_path, viewport, f"chat-{viewport}-full")
