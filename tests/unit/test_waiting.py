"""A bounded wait on a future: what ``asyncio.wait_for`` gives, without its task."""

from __future__ import annotations

import asyncio

import pytest

from herald.core.waiting import wait_within


async def test_a_future_settled_in_time_gives_its_result() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_result, "answer")

    assert await wait_within(future, 60) == "answer"


async def test_a_future_not_settled_in_time_gives_none() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    assert await wait_within(future, 0.01) is None


async def test_a_future_not_settled_in_time_raises_what_late_makes() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    with pytest.raises(LookupError, match="too late"):
        await wait_within(future, 0.01, lambda: LookupError("too late"))


async def test_cancelling_the_waiter_cancels_the_future() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(wait_within(future, 60))
    await asyncio.sleep(0)

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert future.cancelled()
