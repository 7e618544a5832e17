"""A wait on a future bounded in time, without ``asyncio.wait_for``'s task.

On Python 3.11 ``wait_for`` wraps every wait in a task of its own and cancels it on time
out; on a path taken once per handshake (the token check, the wait for a client's first
frame) that task and its cancellation cost more than the rest of the wait. A timer on the
future itself ends the wait the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_within(
    future: asyncio.Future[T], delay_s: float, late: Callable[[], BaseException] | None = None
) -> T | None:
    """``future``'s result if it settles within ``delay_s``; after that, None, or the
    exception ``late`` makes. Cancelling the waiter cancels the future, as ``wait_for`` does."""
    timer = asyncio.get_running_loop().call_later(delay_s, _settle, future, late)
    try:
        return await future
    finally:
        timer.cancel()


def _settle(future: asyncio.Future[T], late: Callable[[], BaseException] | None) -> None:
    if future.done():
        return
    if late is None:
        future.set_result(None)  # type: ignore[arg-type]  # the caller reads None as "no answer in time"
    else:
        future.set_exception(late())
