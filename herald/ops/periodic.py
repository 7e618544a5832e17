"""Work a part does in the background every few seconds for as long as it runs.

Sweeps, samples, trims and snapshots all had the same task written around them: sleep,
work, again, and at stop cancel the task and wait for it. ``Periodic`` is that task.
What a failure of the work means differs (a sweep is skipped, a sample logged), so the
work handles its own errors; one escaping ends the loop, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("herald.periodic")


class Periodic:
    def __init__(self, name: str, every_s: float, work: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._every_s = every_s
        self._work = work
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """The first run comes ``every_s`` after the start, not at it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it: a run in progress is cut short."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._every_s)
                await self._work()
        except Exception:
            log.exception("%s stopped: its work raised", self._name)
