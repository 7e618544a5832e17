"""`herald dlq list|replay|drop`: the bus's dead letters, for the operator.

A message of a work queue (dispatch, receipts, webhook retries) that failed more than
``HERALD_DELIVERY_LIMIT`` times is parked, never lost. This command shows them (with the
Herald message ids inside each), sends them back to their queue once the cause is fixed,
or deletes them.

Where they are read: with ``HERALD_AMQP_URL`` set, from RabbitMQ directly (the same
variables as the services; no Herald process needs to run); without it, from a running
``herald dev`` through its dispatch port (``--url``), since its dead letters live in that
process's memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from herald.adapters import make_bus
from herald.adapters.bus.base import DeadLetter
from herald.core.errors import ConfigError, Unavailable
from herald.core.settings import Settings

DEV_DISPATCH_URL = "http://127.0.0.1:8003"
HTTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Row:
    """A dead letter as the table shows it (from the bus, or from dispatch's JSON)."""

    id: str
    queue: str
    reason: str
    deliveries: int
    at_ms: int | None
    size: int
    about: str

    @classmethod
    def of(cls, letter: DeadLetter) -> Row:
        return cls(
            letter.id, letter.queue, letter.reason, letter.deliveries, letter.at_ms, len(letter.body), letter.about
        )


async def run(
    settings: Settings, action: str, ids: Sequence[str], every: bool, limit: int, url: str, token: str
) -> str:
    """Do ``action`` (list, replay, drop) and return what to print."""
    if action in ("replay", "drop") and not ids and not every:
        raise ConfigError(f"herald dlq {action}: name the dead letters (their ids from `herald dlq list`) or --all")
    chosen = None if every else list(ids)
    if settings.amqp_url:
        result = await _on_broker(settings, action, chosen, limit)
    else:
        result = await _on_dev(url, token, action, chosen, limit)
    if isinstance(result, int):
        verb = "replayed" if action == "replay" else "dropped"
        return f"{verb} {result} dead letter{'s' if result != 1 else ''}"
    return render(result, int(time.time() * 1000))


async def _on_broker(settings: Settings, action: str, ids: list[str] | None, limit: int) -> list[Row] | int:
    bus = make_bus(settings)
    await bus.start()
    try:
        if action == "list":
            return [Row.of(letter) for letter in await bus.dead_letters(limit)]
        if action == "replay":
            return await bus.replay_dead(ids, limit)
        return await bus.drop_dead(ids, limit)
    finally:
        await bus.close()


async def _on_dev(url: str, token: str, action: str, ids: list[str] | None, limit: int) -> list[Row] | int:
    headers = {"authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=HTTP_TIMEOUT_S) as client:
            if action == "list":
                response = await client.get("/v1/dead-letters", params={"limit": limit})
            else:
                response = await client.post(f"/v1/dead-letters/{action}", json={"ids": ids, "limit": limit})
    except httpx.TransportError as exc:
        raise Unavailable(
            f"cannot reach dispatch at {url} ({exc!r}): run this where `herald dev` runs (or pass --url), "
            "or set HERALD_AMQP_URL to read a cluster's dead letters from RabbitMQ"
        ) from exc
    body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise Unavailable(f"dispatch at {url} answered {response.status_code}: {message or response.text[:200]}")
    if action == "list":
        return [Row(**letter) for letter in body["dead_letters"]]
    return int(body["count"])


def render(rows: list[Row], now_ms: int) -> str:
    if not rows:
        return "No dead letters."
    table = [
        [row.id, row.queue, row.reason, str(row.deliveries), _ago(now_ms, row.at_ms), f"{row.size:,}", row.about]
        for row in rows
    ]
    header = ["id", "queue", "reason", "deliveries", "parked", "bytes", "about"]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)), line[-1]]).rstrip()
        for line in [header, *table]
    ]
    return "\n".join([f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''}", *lines])


def _ago(now_ms: int, at_ms: int | None) -> str:
    if at_ms is None:
        return "?"
    seconds = max(0, now_ms - at_ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
