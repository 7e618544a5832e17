"""HERALD_MALLOC_TRIM_S: every service hands the C allocator's free pages back now and then."""

from __future__ import annotations

import asyncio

from herald.core.settings import Settings
from herald.ops.heap import HeapTrimmer, heap_parts


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_trim_gives_back_the_pages_of_freed_memory_scattered_in_the_heap() -> None:
    scattered: list[bytearray] | None = [bytearray(4000) for _ in range(40_000)]  # ~160 MB in malloc's heap
    assert scattered is not None
    kept, scattered = scattered[::16], None  # every 16th stays: the heap cannot shrink from the top
    before = _rss_kib()

    HeapTrimmer(60).trim()

    assert before - _rss_kib() > 50_000  # most of the ~150 MB freed is resident no more
    assert len(kept) == 2_500


def test_the_trimmer_runs_at_its_interval() -> None:
    trimmer = HeapTrimmer(0.05)

    async def run() -> None:
        await trimmer.start()
        await asyncio.sleep(0.28)
        await trimmer.stop()

    asyncio.run(run())
    assert 3 <= trimmer.trims <= 6


def test_trimming_is_on_by_default_once_a_minute_and_off_at_zero() -> None:
    assert Settings.from_env("standalone", {}).malloc_trim_s == 60
    assert len(heap_parts(60)) == 1
    assert heap_parts(0) == []
