"""Headless Chromium for the browser tests (Debian `chromium` and `chromium-driver`, driven
by selenium), a wait that polls the page, viewports of a desktop and a phone, screenshots,
and the layout facts the pages are held to, read from the DOM.

Tests using it are skipped, saying why, only where the packages are not installed
(scripts/test installs them when it can). Screenshots go to the test's pytest temporary
directory; each path is printed in the run's summary (tests/e2e/conftest.py).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 15.0
# CSS pixels: a laptop screen, and an iPhone 12-15 in portrait.
VIEWPORTS: dict[str, tuple[int, int]] = {"desktop": (1280, 900), "phone": (390, 844)}
SCREENSHOTS: list[Path] = []  # every screenshot this run saved, for the summary

needs_chromium = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="no Chromium here: install the Debian packages chromium and chromium-driver",
)


def open_browser() -> Any:
    """A new browser with a profile of its own (its own localStorage)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


def until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def set_viewport(browser: Any, name: str) -> None:
    """Exactly this many CSS pixels of page, as a device would have (a phone's viewport meta
    applies): the window size of a headless browser is not its viewport."""
    width, height = VIEWPORTS[name]
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": name == "phone"},
    )


def screenshot(browser: Any, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
    SCREENSHOTS.append(path)
    print(f"screenshot: {path}")
    return path


@dataclass(frozen=True)
class Layout:
    """What a reader sees of a page at one viewport size, in CSS pixels."""

    viewport: tuple[int, int]
    header_height: float
    input_top: float
    input_bottom: float
    input_visible: bool  # rendered, not hidden behind anything else at its centre
    text_px: float  # font size of the message text
    page_width: int  # the document's scroll width: more than the viewport means sideways scrolling
    log_height: float


def layout(browser: Any, header: str, field: str, text: str, log: str) -> Layout:
    """Measure the page: CSS selectors of its header, its input field, one message's text
    and the scrolling conversation."""
    facts = browser.execute_script(
        """
        const [header, field, text, log] = arguments;
        const rect = (sel) => document.querySelector(sel).getBoundingClientRect();
        const f = rect(field);
        const atCentre = document.elementFromPoint(f.left + f.width / 2, f.top + f.height / 2);
        return {
          viewport: [window.innerWidth, window.innerHeight],
          header: rect(header).height,
          inputTop: f.top, inputBottom: f.bottom,
          inputVisible: f.width > 0 && f.height > 0 && atCentre === document.querySelector(field),
          textPx: parseFloat(getComputedStyle(document.querySelector(text)).fontSize),
          pageWidth: document.documentElement.scrollWidth,
          log: rect(log).height,
        };
        """,
        header,
        field,
        text,
        log,
    )
    return Layout(
        tuple(facts["viewport"]),
        facts["header"],
        facts["inputTop"],
        facts["inputBottom"],
        facts["inputVisible"],
        facts["textPx"],
        facts["pageWidth"],
        facts["log"],
    )
