"""Per-app limits as collect applies them: the app's own where set, the process defaults else."""

from __future__ import annotations

from herald.adapters.directory.base import Directory
from herald.core.settings import Settings
from herald.messaging.accept import Limits
from herald.messaging.appconfig import AppConfigs
from herald.messaging.ratelimit import MessageRate


class Quotas:
    def __init__(self, settings: Settings, configs: AppConfigs, directory: Directory) -> None:
        self._settings = settings
        self._configs = configs
        self._rate = MessageRate(configs, directory, settings.rate_per_s)

    async def limits(self, app_id: str) -> Limits:
        own = (await self._configs.get(app_id)).limits
        return Limits(
            max_payload=own.max_payload or self._settings.max_payload,
            max_recipients=own.max_batch or self._settings.max_batch,
            default_ttl_s=self._settings.message_ttl_s,
        )

    async def max_batch(self, app_id: str) -> int:
        return (await self._configs.get(app_id)).limits.max_batch or self._settings.max_batch

    async def max_groups_per_user(self, app_id: str) -> int:
        return (await self._configs.get(app_id)).limits.groups_per_user or self._settings.max_groups_per_user

    async def charge(self, app_id: str, messages: int) -> None:
        """Take ``messages`` from the app's bucket (``herald.messaging.ratelimit``, the same
        bucket push nodes charge for socket publishes), or answer 429 with when to retry."""
        await self._rate.charge(app_id, messages)
