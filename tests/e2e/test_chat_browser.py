"""The chat page in a real browser: headless Chromium, two independent browsers in one room.

Skipped, saying why, only where Chromium is not installed (tests/support/browser.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import needs_chromium, open_browser, until
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
