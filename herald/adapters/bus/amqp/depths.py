"""Queue depths for ``Bus.queue_depths``: passive declares on one channel kept between calls.

Push nodes ask at every heartbeat and dispatch every 5 s. With aio-pika 10.2 / aiormq 7.2
every channel opened and closed leaves about 4.4 KB behind (``UnderlayChannel.create``
adds a callback to an observer of ``connection.closing`` that its close never removes,
holding the channel), so a channel per call made those processes grow for as long as they
ran (issue 18). One channel, reopened only after a miss (a passive declare of a missing
queue closes its channel) or a lost connection: the leak is bounded by those, and a queue
found missing is not asked again for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from herald.adapters.bus.amqp.channels import OPERATION_TIMEOUT_S, RETRYABLE, open_channel
from herald.core.errors import Unavailable

# How long a legacy queue found missing is left out before it is asked again: gone for
# good once deleted.
LEGACY_ABSENT_S = 600.0
# How long another queue found missing is left out: it may be declared soon (the retries
# queue by its first consumer, a node queue by its node). Each miss costs a channel (and
# aiormq keeps a few KB of every channel closed): at dispatch's 5 s readings a 10 s
# recheck grew it by about 0.3 MB per 10 minutes per missing queue (issue 18).
MISSING_RECHECK_S = 60.0
# Missing queues remembered at most; past it the expired are forgotten (node ids come and go).
MAX_ABSENT = 1024


class QueueDepths:
    def __init__(self) -> None:
        self._kept: tuple[AbstractChannel, AbstractConnection] | None = None
        self._absent_until: dict[str, float] = {}  # bounded by MAX_ABSENT (expired pruned)
        self._lock = asyncio.Lock()

    async def read(self, connection: AbstractConnection, names: Mapping[str, str]) -> dict[str, int]:
        """Messages waiting per label of ``names`` (label -> queue); missing queues left out.
        A label starting with ``legacy:`` names a queue of an older layout."""
        depths: dict[str, int] = {}
        async with self._lock:
            now = time.monotonic()
            channel = self._channel_on(connection)
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    for label, name in names.items():
                        if self._absent_until.get(name, 0.0) > now:
                            continue
                        if channel is None or channel.is_closed:
                            channel = await open_channel(connection)
                        try:
                            queue = await channel.declare_queue(name, passive=True)
                        except ChannelNotFoundEntity:
                            wait_s = LEGACY_ABSENT_S if label.startswith("legacy:") else MISSING_RECHECK_S
                            self._absent_until[name] = now + wait_s
                            continue
                        depths[label] = queue.declaration_result.message_count or 0
            except RETRYABLE as exc:
                await _close_quietly(channel)
                channel = None
                raise Unavailable(f"RabbitMQ unavailable: {exc!r}") from exc
            finally:
                self._kept = (channel, connection) if channel is not None and not channel.is_closed else None
                if len(self._absent_until) > MAX_ABSENT:
                    self._absent_until = {q: until for q, until in self._absent_until.items() if until > now}
        return depths

    async def close(self) -> None:
        if self._kept is not None:
            await _close_quietly(self._kept[0])
            self._kept = None

    def _channel_on(self, connection: AbstractConnection) -> AbstractChannel | None:
        """The channel the last reading left open, if it is still usable on ``connection``."""
        if self._kept is None:
            return None
        channel, on = self._kept
        if on is connection and not channel.is_closed:
            return channel
        self._kept = None
        return None


async def _close_quietly(channel: AbstractChannel | None) -> None:
    if channel is not None and not channel.is_closed:
        with contextlib.suppress(*RETRYABLE, RuntimeError):
            await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)
