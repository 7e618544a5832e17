"""Opt-in allocation tracing (``HERALD_TRACEMALLOC``): find what a long-running process keeps.

Resident memory that grows slowly under churn is something kept per connection or per
message after it stopped mattering. ``tracemalloc`` snapshots taken minutes apart, compared
by traceback (``bench/memtrace.py``), name the line that allocated what stayed. Tracing
starts once the process is up, so the snapshots hold what it allocated while serving, not
its start-up. After each snapshot a full collection runs and the live objects are counted
by type (a leak keeps them reachable), and at stop what a collection finds unreachable is
listed by type and allocation site (what a node with rare full collections accumulates).
Off by default: tracing slows every allocation, and the collections change the process's
memory profile, so a run that measures RSS runs without it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

from herald.ops.periodic import Periodic
from herald.ops.runtime import Part

log = logging.getLogger("herald.memtrace")

FRAMES = 6


class MemTrace:
    """Writes ``<role>-<pid>-<n>.tracemalloc`` into ``directory`` every ``every_s`` seconds."""

    def __init__(self, role: str, directory: str, every_s: float) -> None:
        self._prefix = Path(directory) / f"{role}-{os.getpid()}"
        self._periodic = Periodic("memtrace", every_s, self._tick)
        self.written = 0

    async def start(self) -> None:
        self._prefix.parent.mkdir(parents=True, exist_ok=True)
        tracemalloc.start(FRAMES)
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        self.snapshot()
        self.garbage()
        tracemalloc.stop()

    def garbage(self, label: str = "") -> Path:
        """What a full collection finds unreachable now, by type and by the line that
        allocated it, into ``<role>-<pid>[-<label>]-garbage.json``: cyclic garbage is what
        reference counting could not free, and what a node with rare full collections
        accumulates."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
            garbage, gc.garbage[:] = list(gc.garbage), []
        finally:
            gc.set_debug(0)
        by_type = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
        by_site: Counter[str] = Counter()
        for obj in garbage:
            traceback = tracemalloc.get_object_traceback(obj)
            if traceback is not None:
                by_site[" <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(traceback[-3:]))] += 1
        path = Path(f"{self._prefix}{'-' + label if label else ''}-garbage.json")
        report = {"unreachable": found, "by_type": by_type.most_common(30), "by_site": by_site.most_common(30)}
        path.write_text(json.dumps(report, indent=1))
        del garbage
        return path

    def snapshot(self) -> Path:
        """One snapshot now; the collector's view (uncollected cycles) goes to the log beside it."""
        self.written += 1
        path = Path(f"{self._prefix}-{self.written:03d}.tracemalloc")
        counts = gc.get_count()
        tracemalloc.take_snapshot().dump(str(path))
        traced_kib = tracemalloc.get_traced_memory()[0] // 1024
        log.warning("memtrace: %s (gc counts %s, traced %d KiB)", path, counts, traced_kib)
        return path

    async def _tick(self) -> None:
        # Collected first, and what the collection found reported: the snapshot then
        # holds what is live, not the cyclic garbage waiting for a collection (which
        # swings by megabytes from one minute to the next), and the report says which
        # lines keep making garbage.
        self.garbage(f"{self.written + 1:03d}")
        self.snapshot()
        self.census()

    def census(self) -> Path:
        """Live objects by type after a full collection, and the allocator's block count,
        into ``<role>-<pid>-<n>.types.json`` beside the snapshot: what is still reachable
        is what a leak keeps, whatever the collector's thresholds (the snapshot before it
        also holds the garbage waiting for a collection)."""
        gc.collect()
        counts = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        path = Path(f"{self._prefix}-{self.written:03d}.types.json")
        path.write_text(json.dumps({"blocks": sys.getallocatedblocks(), "types": dict(counts)}))
        return path

    def part(self) -> Part:
        return Part("memtrace", self.start, self.stop)


def memtrace_parts(role: str, directory: str, every_s: float) -> list[Part]:
    """The tracing part when ``HERALD_TRACEMALLOC`` names a directory, else none."""
    return [MemTrace(role, directory, every_s).part()] if directory else []
