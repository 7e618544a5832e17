from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from herald_client import Publisher
from tests.support.procs import Standalone, start_standalone


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """`herald dev` as a real process, with its data in a temporary directory."""
    herald = start_standalone(tmp_path_factory.mktemp("standalone"))
    try:
        yield herald
    finally:
        code = herald.process.stop()
        assert code == 0, f"herald dev exited with {code} on SIGTERM:\n{herald.process.log_tail()}"


@pytest.fixture
async def publisher(standalone: Standalone) -> AsyncIterator[Publisher]:
    demo = standalone.demo
    async with Publisher(standalone.auth_url, standalone.collect_url, demo["api_key"]) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the browser tests' screenshots are, to look at after the run."""
    from tests.support.browser import SCREENSHOTS

    if SCREENSHOTS:
        terminalreporter.section("screenshots")
        for path in SCREENSHOTS:
            terminalreporter.write_line(str(path))
