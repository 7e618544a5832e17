"""Traffic for fault tests: a producer at a fixed rate and many resuming subscribers.

Everything counts: what was sent, what collect accepted (and so must arrive), what each
user received, how many duplicates the subscribers dropped, how often they reconnected.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from herald_client import HeraldAPIError, Publisher, Subscriber


@dataclass
class Tally:
    sent: int = 0
    refused: int = 0
    accepted: dict[str, set[int]] = field(default_factory=dict)

    @property
    def accepted_count(self) -> int:
        return sum(len(offsets) for offsets in self.accepted.values())


@dataclass
class Audience:
    """One Subscriber per user, each reading into its own list (offset, arrival time)."""

    subscribers: dict[str, Subscriber]
    received: dict[str, list[tuple[int, float]]]
    readers: list[asyncio.Task[None]]

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.subscribers.values())

    @property
    def reconnects(self) -> int:
        return sum(s.connects - 1 for s in self.subscribers.values())

    def missing(self, tally: Tally) -> dict[str, set[int]]:
        missing = {}
        for user, offsets in tally.accepted.items():
            got = {offset for offset, _ in self.received.get(user, [])}
            if offsets - got:
                missing[user] = offsets - got
        return missing

    def out_of_order(self) -> int:
        return sum(1 for frames in self.received.values() for a, b in itertools.pairwise(frames) if b[0] <= a[0])

    async def wait_for(self, tally: Tally, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.missing(tally) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def report(self, tally: Tally) -> str:
        missing = self.missing(tally)
        received = sum(len(frames) for frames in self.received.values())
        return (
            f"sent={tally.sent} accepted={tally.accepted_count} refused={tally.refused} received={received} "
            f"missing={sum(len(m) for m in missing.values())} duplicates_dropped={self.duplicates} "
            f"reconnects={self.reconnects} out_of_order={self.out_of_order()}"
        )

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.subscribers.values()))


def users(count: int, tag: str = "u") -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{tag}{run}-{n}" for n in range(count)]


async def subscribe(publisher: Publisher, user_urls: dict[str, list[str]]) -> Audience:
    """Connect every user to its first URL (the others are where it reconnects)."""
    tokens = await asyncio.gather(*(publisher.token(user) for user in user_urls))
    subscribers = {user: Subscriber(urls, token) for (user, urls), token in zip(user_urls.items(), tokens, strict=True)}
    await asyncio.gather(*(s.start() for s in subscribers.values()))
    received: dict[str, list[tuple[int, float]]] = {user: [] for user in user_urls}

    async def read(user: str, subscriber: Subscriber) -> None:
        async for frame in subscriber:
            received[user].append((frame["offset"], time.monotonic()))

    readers = [asyncio.create_task(read(user, s)) for user, s in subscribers.items()]
    return Audience(subscribers, received, readers)


async def produce(
    publisher: Publisher,
    recipients: list[str],
    *,
    rate: int,
    seconds: float,
    at: dict[float, Callable[[], object]] | None = None,
    tally: Tally | None = None,
) -> Tally:
    """Send ``rate`` messages a second for ``seconds`` (a batch every 100 ms), round robin
    over ``recipients``; ``at`` runs actions (kill a node...) that many seconds in."""
    tally = tally or Tally()
    actions = sorted((at or {}).items())
    per_tick = max(1, rate // 10)
    started = time.monotonic()
    tick = 0
    while (elapsed := time.monotonic() - started) < seconds:
        while actions and actions[0][0] <= elapsed:
            result = actions.pop(0)[1]()
            if asyncio.iscoroutine(result):
                await result
        batch = [recipients[(tick * per_tick + n) % len(recipients)] for n in range(per_tick)]
        tick += 1
        tally.sent += len(batch)
        try:
            results = await publisher.send_batch(
                [{"to": {"users": [user]}, "event": "load", "data": {"tick": tick}} for user in batch]
            )
        except (HeraldAPIError, httpx.HTTPError, OSError) as exc:
            tally.refused += len(batch)
            if isinstance(exc, HeraldAPIError) and exc.status < 500:
                raise
        else:
            for user, result in zip(batch, results, strict=True):
                for accepted in result.get("messages", ()):
                    tally.accepted.setdefault(user, set()).add(accepted["offset"])
        await asyncio.sleep(max(0.0, started + tick * 0.1 - time.monotonic()))
    return tally
