"""A started service keeps the cyclic garbage collector off its hot paths."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald.ops.collector import GC_THRESHOLD, gc_parts, settle_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


async def test_a_started_service_freezes_its_start_up_objects(restored_gc: None) -> None:
    gc.unfreeze()

    await settle_gc()

    assert gc.get_freeze_count() > 0


async def test_a_started_service_collects_young_garbage_less_often_than_the_default(restored_gc: None) -> None:
    await settle_gc()

    assert gc.get_threshold() == GC_THRESHOLD
    assert GC_THRESHOLD[0] > 700


async def test_the_settings_come_as_a_part_that_applies_them_when_started(restored_gc: None) -> None:
    [part] = gc_parts("collect")
    gc.unfreeze()

    await part.start()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLD


def test_dispatch_keeps_the_interpreters_defaults() -> None:
    assert gc_parts("dispatch") == []
    assert all(gc_parts(role) for role in ("auth", "collect", "push", "standalone"))
