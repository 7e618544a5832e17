"""auth's operations called directly: apps, keys, tokens, introspection and revocation,
on the SQLite store and the memory directory, without HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from herald.adapters.directory.memory import MemoryDirectory
from herald.adapters.store.sqlite import SqliteStore
from herald.core.commands import Kick
from herald.core.credentials import secret_hash
from herald.core.errors import BadRequest, NotFound, Unauthorized
from herald.core.model import App
from herald.messaging.apikeys import AppKeys
from herald.services.auth.models import ConfigPatch, NewToken
from herald.services.auth.service import AuthService
from tests.support.nodes import NodeCommands

APP = "app_00000000000000a1"
OTHER = "app_00000000000000b2"
TTL_S = 3600.0


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    impl = SqliteStore(":memory:")
    await impl.start()
    for app_id in (APP, OTHER):
        await impl.insert_app(App(app_id, app_id, time.time()))
    try:
        yield impl
    finally:
        await impl.close()


@pytest.fixture
async def directory() -> MemoryDirectory:
    impl = MemoryDirectory()
    await impl.beat("node-a", 30)
    await impl.beat("node-b", 30)
    return impl


@pytest.fixture
def bus() -> NodeCommands:
    return NodeCommands()


@pytest.fixture
def keys(store: SqliteStore) -> AppKeys:
    return AppKeys(store)


@pytest.fixture
def auth(store: SqliteStore, directory: MemoryDirectory, bus: NodeCommands, keys: AppKeys) -> AuthService:
    return AuthService(store, directory, bus, keys, TTL_S)


def token_request(user_id: str = "7", **fields: object) -> NewToken:
    return NewToken.model_validate({"user_id": user_id, **fields})


async def test_a_created_app_is_stored_and_its_key_resolves_to_it(auth: AuthService, keys: AppKeys) -> None:
    created = await auth.create_app("shop")
    assert await keys.app_for_key(created.api_key) == created.app_id


async def test_rotating_a_key_makes_the_old_one_unknown_at_once(auth: AuthService, keys: AppKeys) -> None:
    created = await auth.create_app("shop")
    await keys.app_for_key(created.api_key)  # now cached
    rotated = await auth.rotate_key(created.app_id)
    with pytest.raises(Unauthorized):
        await keys.app_for_key(created.api_key)
    assert await keys.app_for_key(rotated.api_key) == created.app_id


async def test_rotating_the_key_of_an_unknown_app_is_not_found(auth: AuthService) -> None:
    with pytest.raises(NotFound) as raised:
        await auth.rotate_key("app_ffffffffffffffff")
    assert raised.value.code == "unknown_app"


async def test_an_app_id_too_long_to_exist_is_not_found(auth: AuthService) -> None:
    with pytest.raises(NotFound):
        await auth.settings("app_" + "0" * 100)


async def test_a_new_app_has_the_default_settings_and_no_webhook_secret(auth: AuthService) -> None:
    settings = await auth.settings(APP)
    assert (settings.webhook_url, settings.webhook_secret, settings.publish_hook_url) == (None, None, None)


async def test_setting_a_webhook_url_makes_a_webhook_secret(auth: AuthService) -> None:
    settings = await auth.configure(APP, ConfigPatch(webhook_url="https://example.test/hook"))
    assert settings.webhook_url == "https://example.test/hook"
    assert settings.webhook_secret


async def test_a_patch_keeps_the_fields_it_leaves_out(auth: AuthService) -> None:
    first = await auth.configure(APP, ConfigPatch(webhook_url="https://example.test/hook"))
    second = await auth.configure(APP, ConfigPatch.model_validate({"limits": {"messages_per_s": 5}}))
    assert (second.webhook_url, second.webhook_secret) == (first.webhook_url, first.webhook_secret)
    assert second.limits.messages_per_s == 5


async def test_rotate_webhook_secret_replaces_the_secret(auth: AuthService) -> None:
    first = await auth.configure(APP, ConfigPatch(webhook_url="https://example.test/hook"))
    second = await auth.configure(APP, ConfigPatch(rotate_webhook_secret=True))
    assert second.webhook_secret and second.webhook_secret != first.webhook_secret


async def test_an_empty_webhook_url_turns_webhooks_off(auth: AuthService) -> None:
    await auth.configure(APP, ConfigPatch(webhook_url="https://example.test/hook"))
    assert (await auth.configure(APP, ConfigPatch(webhook_url=""))).webhook_url is None


async def test_a_token_without_ttl_lives_the_default_ttl(auth: AuthService) -> None:
    before = time.time()
    issued = await auth.issue_token(APP, token_request())
    assert before + TTL_S <= issued.expires_at <= time.time() + TTL_S


async def test_an_issued_token_introspects_as_its_app_user_device_and_patterns(auth: AuthService) -> None:
    issued = await auth.issue_token(APP, token_request(device="phone", publish=["group:room-*"]))
    seen = await auth.introspect(issued.token)
    assert (seen.active, seen.app_id, seen.user_id, seen.device, seen.publish) == (
        True,
        APP,
        "7",
        "phone",
        ["group:room-*"],
    )


async def test_an_invalid_publish_pattern_is_a_bad_request(auth: AuthService) -> None:
    with pytest.raises(BadRequest) as raised:
        await auth.issue_token(APP, token_request(publish=["nope:*"]))
    assert raised.value.code == "invalid_publish"


async def test_an_unknown_token_introspects_as_inactive(auth: AuthService) -> None:
    seen = await auth.introspect("ct_unknown")
    assert seen.active is False and seen.app_id is None


async def test_introspecting_many_answers_each_token_in_order(auth: AuthService) -> None:
    first = await auth.issue_token(APP, token_request("1"))
    second = await auth.issue_token(APP, token_request("2"))
    seen = await auth.introspect_many([second.token, "ct_unknown", first.token])
    assert [(s.active, s.user_id) for s in seen] == [(True, "2"), (False, None), (True, "1")]


async def test_a_revoked_token_is_inactive_and_every_node_is_told_to_close_it(
    auth: AuthService, bus: NodeCommands
) -> None:
    issued = await auth.issue_token(APP, token_request())
    await auth.revoke(APP, issued.token)
    assert (await auth.introspect(issued.token)).active is False
    kick = Kick(APP, "7", secret_hash(issued.token), "revoked")
    assert bus.sent == {"node-a": [kick], "node-b": [kick]}


async def test_revoking_another_apps_token_is_not_found_and_leaves_it_valid(
    auth: AuthService, bus: NodeCommands
) -> None:
    issued = await auth.issue_token(OTHER, token_request())
    with pytest.raises(NotFound) as raised:
        await auth.revoke(APP, issued.token)
    assert raised.value.code == "unknown_token"
    assert (await auth.introspect(issued.token)).active is True
    assert bus.sent == {}


async def test_revoking_a_user_ends_all_their_tokens_and_closes_all_their_connections(
    auth: AuthService, bus: NodeCommands
) -> None:
    tokens = [await auth.issue_token(APP, token_request()) for _ in range(2)]
    await auth.revoke_user(APP, "7")
    assert [s.active for s in await auth.introspect_many([t.token for t in tokens])] == [False, False]
    assert bus.sent["node-a"] == [Kick(APP, "7", None, "revoked")]


async def test_revoking_an_invalid_user_id_is_a_bad_request(auth: AuthService) -> None:
    with pytest.raises(BadRequest) as raised:
        await auth.revoke_user(APP, "no spaces")
    assert raised.value.code == "invalid_user_id"
