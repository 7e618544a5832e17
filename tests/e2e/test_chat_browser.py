"""The chat page in a real browser: headless Chromium, two independent browsers in one room.

Skipped, saying why, only where the Debian `chromium` and `chromium-driver` packages are
not installed (scripts/test installs them when it can).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.procs import Standalone

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 15.0

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="no Chromium here: install the Debian packages chromium and chromium-driver",
)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@pytest.fixture
def browsers() -> Iterator[tuple[Any, Any]]:
    """Two browsers with profiles of their own: two people, not two tabs of one."""
    first = _browser()
    try:
        second = _browser()
        try:
            yield first, second
        finally:
            second.quit()
    finally:
        first.quit()


def _until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _join(browser: Any, url: str, name: str, room: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.ID, "name").send_keys(name)
    room_input = browser.find_element(By.ID, "room")
    room_input.clear()
    room_input.send_keys(room)
    browser.find_element(By.CSS_SELECTOR, "#join button").click()
    _until(lambda: "connected as" in browser.find_element(By.ID, "status").text, f"{name} to connect")


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
    _until(lambda: "ann: first, before bob came" in _lines(ann), "ann's own message")

    _join(bob, url, "bob", room)
    _until(lambda: "ann: first, before bob came" in _lines(bob), "history on join")
    _until(lambda: "ann" in _people(bob) and "bob" in _people(bob), "presence of both")

    _say(bob, "hi ann")
    _until(lambda: "bob: hi ann" in _lines(ann), "bob's message at ann")

    bob.get("about:blank")  # bob leaves the page...
    _say(ann, "while you were away")
    _until(lambda: "ann: while you were away" in _lines(ann), "ann's message")
    bob.get(url)  # ...and comes back: the page rejoins and resumes from where it was
    _until(lambda: "ann: while you were away" in _lines(bob), "the message sent while bob was away")
    time.sleep(0.5)
    assert _lines(bob) == ["ann: while you were away"], _lines(bob)
    _say(bob, "back")
    _until(lambda: "bob: back" in _lines(ann), "bob's message after the reload")
    assert _lines(ann) == [
        "ann: first, before bob came",
        "bob: hi ann",
        "ann: while you were away",
        "bob: back",
    ]
