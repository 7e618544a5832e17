"""Per-app limits as collect applies them: the app's own where set, the process defaults else."""

from __future__ import annotations

import logging
import math

from herald.adapters.directory.base import Directory
from herald.core.errors import TooManyRequests, Unavailable
from herald.core.settings import Settings
from herald.messaging.accept import Limits
from herald.messaging.appconfig import AppConfigs

log = logging.getLogger("herald.collect")


class Quotas:
    def __init__(self, settings: Settings, configs: AppConfigs, directory: Directory) -> None:
        self._settings = settings
        self._configs = configs
        self._directory = directory

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
        """Take ``messages`` from the app's bucket, shared by every collect replica through
        the directory, or answer 429 with when to retry.

        Fails open: with the directory down the store still protects itself, and refusing
        every message because a rate counter is unreachable would be the worse outage.
        """
        own = (await self._configs.get(app_id)).limits
        rate = own.messages_per_s or self._settings.rate_per_s
        if rate <= 0 or messages <= 0:
            return
        burst = own.burst or max(1, math.ceil(rate))
        try:
            decision = await self._directory.take(app_id, messages, rate, burst)
        except Unavailable as exc:
            log.warning("rate limit not applied, directory unavailable: %s", exc.message)
            return
        if not decision.allowed:
            raise TooManyRequests(
                f"over {rate:g} messages per second (burst {burst}); retry in {decision.retry_after_s:.2f} s",
                retry_after_s=decision.retry_after_s,
                details={"rate_per_s": rate, "burst": burst, "retry_after_s": round(decision.retry_after_s, 3)},
            )
