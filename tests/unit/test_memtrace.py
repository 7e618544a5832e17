"""HERALD_TRACEMALLOC: a process that traces its allocations leaves what a leak hunt needs."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

from herald.core.settings import Settings
from herald.ops.memtrace import MemTrace, memtrace_parts


class Cyclic:
    def __init__(self) -> None:
        self.me = self


async def _traced(trace: MemTrace, seconds: float, cycles: int = 0) -> None:
    await trace.start()
    for _ in range(cycles):
        Cyclic()
    await asyncio.sleep(seconds)
    await trace.stop()


def test_a_traced_process_writes_a_snapshot_and_a_census_each_interval(tmp_path: Path) -> None:
    asyncio.run(_traced(MemTrace("push", str(tmp_path), every_s=0.05), 0.3))

    snapshots = sorted(tmp_path.glob("push-*.tracemalloc"))
    censuses = sorted(tmp_path.glob("push-*.types.json"))
    assert len(snapshots) >= 2 and censuses
    tracemalloc.Snapshot.load(str(snapshots[0]))
    assert json.loads(censuses[0].read_text())["blocks"] > 0


def test_the_stop_report_lists_the_cyclic_garbage_by_type(tmp_path: Path) -> None:
    asyncio.run(_traced(MemTrace("dispatch", str(tmp_path), every_s=3600), 0, cycles=10))

    [report] = tmp_path.glob("dispatch-*-garbage.json")
    by_type = dict(json.loads(report.read_text())["by_type"])
    assert by_type[f"{__name__}.Cyclic"] == 10


def test_tracing_is_off_unless_herald_tracemalloc_names_a_directory() -> None:
    settings = Settings.from_env("standalone", {})

    assert memtrace_parts("push", settings.tracemalloc_dir, settings.tracemalloc_s) == []
    assert len(memtrace_parts("push", "/tmp/snaps", 60.0)) == 1
