"""The security suite: each attack on the push node's edge, against `herald dev` as a real
process, with the outcome asserted. Every test here is marked ``security``
(``scripts/test -m security`` runs them alone)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from herald_client import Publisher
from tests.support.procs import Standalone


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.security)


@pytest.fixture
async def publisher(standalone: Standalone) -> AsyncIterator[Publisher]:
    """The demo app's publisher (each module's ``standalone`` fixture is its own process)."""
    async with Publisher(standalone.auth_url, standalone.collect_url, standalone.demo["api_key"]) as client:
        yield client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzzer's counts, in every run's output."""
    from tests.security.test_ws_fuzz import REPORT

    for line in REPORT:
        terminalreporter.write_line(line)
