"""clients/js/README.md's first example, as a web developer would follow it: the page from
the README, saved to a file and opened in headless Chromium, receives a message sent over
HTTP. The page is read from the README itself, so the README cannot rot.

Skipped, saying why, only where Chromium is not installed (tests/support/browser.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_client import Publisher
from tests.support.browser import needs_chromium, open_browser, until
from tests.support.procs import Standalone

pytestmark = needs_chromium
README = Path(__file__).resolve().parents[2] / "clients" / "js" / "README.md"


def _readme_page() -> str:
    block = re.search(r"```html\n(.*?)```", README.read_text(), re.S)
    assert block, "clients/js/README.md has no html example"
    return "\n".join(line.removeprefix("   ") for line in block.group(1).splitlines())


@pytest.fixture
def browser() -> Iterator[Any]:
    page = open_browser()
    try:
        yield page
    finally:
        page.quit()


async def test_the_readme_page_receives_a_message_sent_over_http(
    standalone: Standalone, publisher: Publisher, browser: Any, tmp_path: Path
) -> None:
    user = f"readme-{uuid.uuid4().hex[:6]}"
    page = _readme_page().replace("PASTE-THE-TOKEN", await publisher.token(user))
    page = page.replace("localhost:8004", f"127.0.0.1:{standalone.port_base + 4}")
    (tmp_path / "hello.html").write_text(page)
    browser.get((tmp_path / "hello.html").as_uri())

    # Sent whether or not the page has connected yet: the backlog comes on connect.
    [sent] = await publisher.send([user], "hello", {"n": 1})

    line = until(lambda: browser.execute_script("return document.getElementById('log').textContent"), "the message")
    assert line == f'user:{user} #{sent["offset"]} hello {{"n":1}}'
