"""Give the C allocator's free memory back to the system now and then (``HERALD_MALLOC_TRIM_S``).

After a burst (a reconnect storm, a node catching up thousands of backlogs, a large
batch) the memory freed by Python's larger objects stays with glibc's malloc: it returns
pages to the system only from the top of its heap, so a process keeps the resident size
of its worst minute. ``malloc_trim(0)`` releases every whole free page wherever it lies
(``MADV_DONTNEED``), so resident memory follows what is in use again. It walks the
allocator's free lists, a few milliseconds for a large heap, hence once a minute by
default; 0 turns it off. Only where the C library is glibc; elsewhere the part does
nothing. (It did not change the slow growth of issue 18's soak: that was live objects
waiting for a collection; see docs/BENCHMARKS.md, "Soak".)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

from herald.ops.periodic import Periodic
from herald.ops.runtime import Part

log = logging.getLogger("herald.heap")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


@dataclass(frozen=True, slots=True)
class HeapUse:
    """What malloc holds: in use by the program, and free but kept (bytes)."""

    in_use: int
    free: int


class _Glibc:
    def __init__(self, libc: ctypes.CDLL) -> None:
        self._trim = libc.malloc_trim
        self._trim.argtypes = [ctypes.c_size_t]
        self._trim.restype = ctypes.c_int
        self._info = getattr(libc, "mallinfo2", None)
        if self._info is not None:
            self._info.restype = _MallInfo2

    def trim(self) -> bool:
        return bool(self._trim(0))

    def use(self) -> HeapUse | None:
        if self._info is None:
            return None
        info = self._info()
        return HeapUse(in_use=info.uordblks + info.hblkhd, free=info.fordblks)


def _glibc() -> _Glibc | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return _Glibc(libc) if hasattr(libc, "malloc_trim") else None


class HeapTrimmer:
    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._libc = _glibc() if every_s > 0 else None
        self._periodic = Periodic("heap-trim", every_s, self._trim_now)
        self.trims = 0

    def trim(self) -> None:
        """Return the free pages now; the allocator's view before and after at DEBUG."""
        if self._libc is None:
            return
        verbose = log.isEnabledFor(logging.DEBUG)  # mallinfo2 walks every arena: only when asked
        before = self._libc.use() if verbose else None
        self._libc.trim()
        self.trims += 1
        after = self._libc.use() if verbose else None
        if before is not None and after is not None:
            log.debug("heap: in use %d KiB, free %d -> %d KiB", after.in_use >> 10, before.free >> 10, after.free >> 10)

    async def _trim_now(self) -> None:
        self.trim()

    async def start(self) -> None:
        if self._libc is not None:
            self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def part(self) -> Part:
        return Part("heap-trim", self.start, self.stop)


def heap_parts(every_s: float) -> list[Part]:
    """The trimming part unless ``HERALD_MALLOC_TRIM_S`` is 0."""
    return [HeapTrimmer(every_s).part()] if every_s > 0 else []
