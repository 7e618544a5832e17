"""Opt-in allocation tracing (``HERALD_TRACEMALLOC``): find what a long-running process keeps.

Resident memory that grows slowly under churn is something kept per connection or per
message after it stopped mattering. ``tracemalloc`` snapshots taken minutes apart, compared
by traceback (``bench/memtrace.py``), name the line that allocated what stayed. Tracing
starts once the process is up, so the snapshots hold what it allocated while serving, not
its start-up. Off by default: tracing slows every allocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import tracemalloc
from pathlib import Path

from herald.ops.runtime import Part

log = logging.getLogger("herald.memtrace")

FRAMES = 6


class MemTrace:
    """Writes ``<role>-<pid>-<n>.tracemalloc`` into ``directory`` every ``every_s`` seconds."""

    def __init__(self, role: str, directory: str, every_s: float) -> None:
        self._prefix = Path(directory) / f"{role}-{os.getpid()}"
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    async def start(self) -> None:
        self._prefix.parent.mkdir(parents=True, exist_ok=True)
        tracemalloc.start(FRAMES)
        self._task = asyncio.create_task(self._loop(), name="memtrace")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tracemalloc.stop()

    def snapshot(self) -> Path:
        """One snapshot now; the collector's view (uncollected cycles) goes to the log beside it."""
        self.written += 1
        path = Path(f"{self._prefix}-{self.written:03d}.tracemalloc")
        counts = gc.get_count()
        tracemalloc.take_snapshot().dump(str(path))
        traced_kib = tracemalloc.get_traced_memory()[0] // 1024
        log.warning("memtrace: %s (gc counts %s, traced %d KiB)", path, counts, traced_kib)
        return path

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await asyncio.to_thread(self.snapshot)

    def part(self) -> Part:
        return Part("memtrace", self.start, self.stop)


def memtrace_parts(role: str, directory: str, every_s: float) -> list[Part]:
    """The tracing part when ``HERALD_TRACEMALLOC`` names a directory, else none."""
    return [MemTrace(role, directory, every_s).part()] if directory else []
