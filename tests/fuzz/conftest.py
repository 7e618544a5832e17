from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.openapi_fuzz import FuzzReport, Target, targets
from tests.support.procs import Standalone, start_standalone

REPORTS: list[FuzzReport] = []


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    """`herald dev` as a real process on free ports, with its data in a temporary directory."""
    herald = start_standalone(tmp_path_factory.mktemp("fuzz"), {"HERALD_LOG_LEVEL": "WARNING"})
    try:
        yield herald
    finally:
        code = herald.process.stop()
        assert code == 0, f"herald dev exited with {code} on SIGTERM:\n{herald.process.log_tail()}"


@pytest.fixture(scope="module")
def fuzz_targets(standalone: Standalone) -> dict[str, Target]:
    service_token = json.loads((standalone.data_dir / "dev-secrets.json").read_text())["service_token"]
    found = targets(standalone.auth_url, standalone.collect_url, standalone.admin_token, service_token)
    return {target.service: target for target in found}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The case counts, in every run's output (the closing note quotes them)."""
    for report in REPORTS:
        terminalreporter.write_line(
            f"openapi fuzz {report.service}: {report.operations} operations, {report.cases} cases,"
            f" {len(report.failures)} failures, {len(report.errors)} errors in {report.seconds:.1f} s"
        )
