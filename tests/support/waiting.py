"""Waiting in tests for something that has nothing to wait on: a TTL running out, a consumer
dying, a metric catching up. One poller for every test, so each waits the same way."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A bound on a test, not a speed check: generous for a loaded two-core machine.
WAIT_S = 15.0
INTERVAL_S = 0.01


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    timeout_s: float = WAIT_S,
    *,
    what: str = "the condition",
    interval_s: float = INTERVAL_S,
) -> T:
    """Call ``check`` (plain or async) until it returns something truthy, and return that;
    an ``AssertionError`` naming ``what`` if it never does within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: Any = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s")
        await asyncio.sleep(interval_s)
