"""auth's operations without HTTP: apps and their keys, connect tokens, introspection, revocation.

The routes (``services/auth/routes.py``) only move values between HTTP and these methods,
so every behaviour here can be called, and tested, directly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from herald.adapters.bus.base import Bus
from herald.adapters.directory.base import Directory
from herald.adapters.store.base import Store
from herald.core.commands import Kick
from herald.core.credentials import new_app_id, new_connect_token, new_webhook_secret, secret_hash
from herald.core.errors import NotFound
from herald.core.model import App, AppConfig, AppLimits, TokenRecord, check_user_id
from herald.core.permissions import check_patterns
from herald.messaging.apikeys import AppKeys, issue_api_key
from herald.messaging.to_nodes import send_to_all_nodes
from herald.services.auth.models import (
    AppCreated,
    AppSettings,
    ConfigPatch,
    Introspection,
    KeyRotated,
    LimitsBody,
    NewToken,
    TokenIssued,
)

# App ids are "app_" and 16 hex digits; a longer one is unknown without a store read.
MAX_APP_ID_LENGTH = 64


def introspection(record: TokenRecord | None) -> Introspection:
    """What a push node learns of a token: inactive, or whose it is and what it may do."""
    if record is None:
        return Introspection(active=False)
    return Introspection(
        active=True,
        app_id=record.app_id,
        user_id=record.user_id,
        exp=record.expires_at,
        device=record.device,
        publish=list(record.publish),
    )


def app_settings(app_id: str, config: AppConfig) -> AppSettings:
    return AppSettings(
        app_id=app_id,
        webhook_url=config.webhook_url,
        webhook_secret=config.webhook_secret,
        limits=LimitsBody.model_validate(config.limits.to_dict(), strict=False),  # as stored
        publish_hook_url=config.publish_hook_url,
    )


def patched_config(config: AppConfig, patch: ConfigPatch) -> AppConfig:
    """``config`` with the fields ``patch`` names; a webhook secret is made when a hook
    first needs one, or anew when asked to rotate it."""
    webhook_url, secret = config.webhook_url, config.webhook_secret
    if "webhook_url" in patch.model_fields_set:
        webhook_url = patch.webhook_url or None
    hook_url = config.publish_hook_url
    if "publish_hook_url" in patch.model_fields_set:
        hook_url = patch.publish_hook_url or None
    if (webhook_url or hook_url) and (secret is None or patch.rotate_webhook_secret):
        secret = new_webhook_secret()
    limits = AppLimits(**patch.limits.model_dump()) if patch.limits is not None else config.limits
    return AppConfig(webhook_url=webhook_url, webhook_secret=secret, limits=limits, publish_hook_url=hook_url)


class AuthService:
    """Apps (operator), connect tokens (apps) and introspection (push nodes).

    Revoking closes the token's connections: a ``Kick`` goes to every push node through
    the directory and the bus; issuing needs only the store.
    """

    def __init__(self, store: Store, directory: Directory, bus: Bus, keys: AppKeys, token_ttl_s: float) -> None:
        self._store = store
        self._directory = directory
        self._bus = bus
        self._keys = keys
        self._token_ttl_s = token_ttl_s

    async def create_app(self, name: str) -> AppCreated:
        """A new app and its first API key (shown this once)."""
        app = App(app_id=new_app_id(), name=name, created_at=time.time())
        await self._store.insert_app(app)
        key = await issue_api_key(self._store, app.app_id)
        return AppCreated(app_id=app.app_id, name=app.name, api_key=key)

    async def rotate_key(self, app_id: str) -> KeyRotated:
        """A new key replacing the app's others; this process forgets the old ones at once."""
        await self._existing_app(app_id)
        key = await issue_api_key(self._store, app_id)
        self._keys.forget(app_id)
        return KeyRotated(app_id=app_id, api_key=key)

    async def settings(self, app_id: str) -> AppSettings:
        await self._existing_app(app_id)
        return app_settings(app_id, await self._store.get_app_config(app_id))

    async def configure(self, app_id: str, patch: ConfigPatch) -> AppSettings:
        """Apply ``patch``; fields it leaves out keep their value."""
        await self._existing_app(app_id)
        config = patched_config(await self._store.get_app_config(app_id), patch)
        await self._store.set_app_config(app_id, config)
        return app_settings(app_id, config)

    async def issue_token(self, app_id: str, request: NewToken) -> TokenIssued:
        """A connect token for one user; only its hash is stored."""
        token = new_connect_token()
        now = time.time()
        expires_at = now + (request.ttl_s or self._token_ttl_s)
        publish = check_patterns(request.publish or [])
        record = TokenRecord(secret_hash(token), app_id, request.user_id, expires_at, now, request.device, publish)
        await self._store.insert_token(record)
        return TokenIssued(
            token=token, user_id=request.user_id, expires_at=expires_at, device=request.device, publish=list(publish)
        )

    async def revoke(self, app_id: str, token: str) -> None:
        """Delete one of the app's tokens and close its connections (404 for another app's)."""
        token_hash = secret_hash(token)
        record = await self._store.get_token(token_hash, time.time())
        if record is None or record.app_id != app_id:
            raise NotFound("no such token", code="unknown_token")
        await self._store.delete_token(token_hash)
        await send_to_all_nodes(self._directory, self._bus, [Kick(app_id, record.user_id, token_hash, "revoked")])

    async def revoke_user(self, app_id: str, user_id: str) -> None:
        """Delete every token of the user and close all their connections."""
        check_user_id(user_id)
        await self._store.delete_user_tokens(app_id, user_id)
        await send_to_all_nodes(self._directory, self._bus, [Kick(app_id, user_id, None, "revoked")])

    async def introspect(self, token: str) -> Introspection:
        return introspection(await self._store.get_token(secret_hash(token), time.time()))

    async def introspect_many(self, tokens: Sequence[str]) -> list[Introspection]:
        """One answer per token, in order, from one store query."""
        hashes = [secret_hash(token) for token in tokens]
        records = await self._store.get_tokens(hashes, time.time())
        return [introspection(records.get(token_hash)) for token_hash in hashes]

    async def _existing_app(self, app_id: str) -> None:
        if len(app_id) > MAX_APP_ID_LENGTH or await self._store.get_app(app_id) is None:
            raise NotFound("no such app", code="unknown_app")
