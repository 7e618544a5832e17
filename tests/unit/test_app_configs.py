"""The per-process cache of app configs (herald/messaging/appconfig.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from herald.adapters.store.base import Store
from herald.core.errors import Unavailable
from herald.core.model import AppConfig, AppLimits
from herald.messaging.appconfig import AppConfigs


class SlowStore:
    """A store whose config reads take a while and are counted."""

    def __init__(self) -> None:
        self.reads = 0
        self.config = AppConfig(limits=AppLimits(max_batch=7))
        self.release = asyncio.Event()
        self.fail = False

    async def get_app_config(self, app_id: str) -> AppConfig:
        self.reads += 1
        await self.release.wait()
        if self.fail:
            raise Unavailable("store down")
        return self.config


def configs_on(store: SlowStore) -> AppConfigs:
    return AppConfigs(cast(Store, store))


async def test_requests_that_miss_together_share_one_store_read() -> None:
    store = SlowStore()
    configs = configs_on(store)
    waiting = [asyncio.ensure_future(configs.get("app")) for _ in range(50)]
    await asyncio.sleep(0)
    store.release.set()
    found = await asyncio.gather(*waiting)
    assert store.reads == 1
    assert {config.limits.max_batch for config in found} == {7}
    await configs.get("app")
    assert store.reads == 1  # cached


async def test_a_failed_read_is_every_waiters_error_and_is_not_cached() -> None:
    store = SlowStore()
    store.fail = True
    store.release.set()
    configs = configs_on(store)
    results: list[Any] = await asyncio.gather(configs.get("app"), configs.get("app"), return_exceptions=True)
    assert [type(r) for r in results] == [Unavailable, Unavailable]
    store.fail = False
    assert (await configs.get("app")).limits.max_batch == 7
    assert store.reads == 2


async def test_a_read_under_way_when_the_config_is_forgotten_is_not_cached() -> None:
    store = SlowStore()
    configs = configs_on(store)
    stale = asyncio.ensure_future(configs.get("app"))
    await asyncio.sleep(0)
    configs.forget("app")
    store.config = AppConfig(limits=AppLimits(max_batch=9))
    store.release.set()
    await stale
    assert (await configs.get("app")).limits.max_batch == 9
    assert store.reads == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_others_read() -> None:
    store = SlowStore()
    configs = configs_on(store)
    leaving = asyncio.ensure_future(configs.get("app"))
    staying = asyncio.ensure_future(configs.get("app"))
    await asyncio.sleep(0)
    leaving.cancel()
    store.release.set()
    assert (await staying).limits.max_batch == 7
    with pytest.raises(asyncio.CancelledError):
        await leaving
