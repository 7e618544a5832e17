"""API keys to app ids: cached per process, and one store read per key however many ask."""

from __future__ import annotations

import asyncio

import pytest

from herald.core.credentials import secret_hash
from herald.core.errors import Unauthorized, Unavailable
from herald.messaging.apikeys import AppKeys

APP = "app_00000000000000a1"


class KeyStore:
    """Just the store's key lookup, counting its reads; ``down`` makes them fail."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = {secret_hash(key): app for key, app in keys.items()}
        self.reads = 0
        self.down = False

    async def app_for_key(self, key_hash: str) -> str | None:
        self.reads += 1
        await asyncio.sleep(0)
        if self.down:
            raise Unavailable("store down")
        return self.keys.get(key_hash)


def app_keys(store: KeyStore) -> AppKeys:
    return AppKeys(store)  # type: ignore[arg-type]  # only app_for_key is used


async def test_concurrent_lookups_of_one_key_share_one_store_read() -> None:
    store = KeyStore({"hk_a": APP})
    keys = app_keys(store)
    assert await asyncio.gather(*(keys.app_for_key("hk_a") for _ in range(20))) == [APP] * 20
    assert store.reads == 1


async def test_a_cached_key_needs_no_store_read() -> None:
    store = KeyStore({"hk_a": APP})
    keys = app_keys(store)
    await keys.app_for_key("hk_a")
    await keys.app_for_key("hk_a")
    assert store.reads == 1


async def test_an_unknown_key_is_refused_for_every_concurrent_caller() -> None:
    keys = app_keys(KeyStore({}))
    outcomes = await asyncio.gather(*(keys.app_for_key("hk_x") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, Unauthorized) for outcome in outcomes)


async def test_a_failed_read_fails_its_callers_and_the_next_lookup_reads_again() -> None:
    store = KeyStore({"hk_a": APP})
    keys = app_keys(store)
    store.down = True
    with pytest.raises(Unavailable):
        await keys.app_for_key("hk_a")
    store.down = False
    assert await keys.app_for_key("hk_a") == APP
    assert store.reads == 2
