"""Periodic: the background loop behind sweeps, samples, trims and snapshots."""

from __future__ import annotations

import asyncio
import logging

import pytest

from herald.ops.periodic import Periodic


async def test_the_work_runs_every_interval_from_the_start_on() -> None:
    runs: list[float] = []

    async def work() -> None:
        runs.append(asyncio.get_running_loop().time())

    periodic = Periodic("test", 0.05, work)
    started = asyncio.get_running_loop().time()
    periodic.start()
    await asyncio.sleep(0.28)
    await periodic.stop()

    assert 4 <= len(runs) <= 6
    assert runs[0] - started >= 0.045  # not at the start itself


async def test_stop_ends_the_loop_and_a_second_stop_is_harmless() -> None:
    periodic = Periodic("test", 0.01, _nothing)
    periodic.start()
    await periodic.stop()
    await periodic.stop()

    assert not periodic.running


async def test_work_that_raises_ends_the_loop_with_its_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    periodic = Periodic("broken-sweeper", 0.01, broken)
    with caplog.at_level(logging.ERROR, logger="herald.periodic"):
        periodic.start()
        await asyncio.sleep(0.05)

    assert not periodic.running
    assert "broken-sweeper stopped" in caplog.text and "RuntimeError: boom" in caplog.text
    await periodic.stop()


async def _nothing() -> None:
    return None
