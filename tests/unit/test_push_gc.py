"""A started push node keeps the cyclic garbage collector off its hot path."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald.services.push.main import GC_THRESHOLD, settle_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


async def test_a_started_node_freezes_its_start_up_objects(restored_gc: None) -> None:
    gc.unfreeze()

    await settle_gc()

    assert gc.get_freeze_count() > 0


async def test_a_started_node_collects_young_garbage_less_often_than_the_default(restored_gc: None) -> None:
    await settle_gc()

    assert gc.get_threshold() == GC_THRESHOLD
    assert GC_THRESHOLD[0] > 700
