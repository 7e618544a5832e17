"""An app's ``messages_per_s``: one token bucket per app, shared by every process that
accepts its messages (collect's ``POST /v1/messages``, push nodes' socket publishes)
through the directory, so a message costs the same whichever door it came in by."""

from __future__ import annotations

import logging
import math

from herald.adapters.directory.base import Directory
from herald.core.errors import TooManyRequests, Unavailable
from herald.messaging.appconfig import AppConfigs

log = logging.getLogger("herald.ratelimit")


class MessageRate:
    def __init__(self, configs: AppConfigs, directory: Directory, default_rate_per_s: float) -> None:
        self._configs = configs
        self._directory = directory
        self._default_rate_per_s = default_rate_per_s

    async def charge(self, app_id: str, messages: int) -> None:
        """Take ``messages`` from the app's bucket, or raise TooManyRequests (code
        ``rate_limited``) with when to retry.

        Fails open: with the directory down the store still protects itself, and refusing
        every message because a rate counter is unreachable would be the worse outage.
        """
        own = (await self._configs.get(app_id)).limits
        rate = own.messages_per_s or self._default_rate_per_s
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
