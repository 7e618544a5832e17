"""Events: what Herald tells business systems happened, on the bus and as webhooks.

Every event is one JSON object with ``type``, ``app_id``, ``ts`` (epoch ms) and the fields
of its type, published on the events topic exchange with the routing key
``<app_id>.<type>``:

| type | when | fields |
| --- | --- | --- |
| ``user.online`` | a user's first connection opened (not one per tab) | user_id, conn_id, node_id |
| ``user.offline`` | a user's last connection closed, or its node died | user_id, conn_id, node_id |
| ``group.joined`` | a user became a member of a group | user_id, group |
| ``group.left`` | a user stopped being a member | user_id, group |
| ``message.acked`` | a connection acknowledged a channel up to an offset | user_id, conn_id, channel, offset |

So ``app_123.#`` is everything of one app, ``*.user.*`` every presence change of every app.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from herald.adapters.bus.base import Bus
from herald.core import codec
from herald.core.errors import Unavailable
from herald.core.model import now_ms

log = logging.getLogger("herald.events")

USER_ONLINE = "user.online"
USER_OFFLINE = "user.offline"
GROUP_JOINED = "group.joined"
GROUP_LEFT = "group.left"
MESSAGE_ACKED = "message.acked"
TYPES = (USER_ONLINE, USER_OFFLINE, GROUP_JOINED, GROUP_LEFT, MESSAGE_ACKED)


def event(kind: str, app_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "app_id": app_id, "ts": now_ms(), **fields}


def routing_key(value: dict[str, Any]) -> str:
    return f"{value['app_id']}.{value['type']}"


async def publish(bus: Bus, value: dict[str, Any]) -> bool:
    """Publish one event; a broker outage loses the notification, never the request."""
    try:
        await bus.publish_event(routing_key(value), codec.dumps(value))
    except Unavailable as exc:
        log.warning("could not publish a %s event: %s", value["type"], exc.message)
        return False
    return True


async def publish_all(bus: Bus, values: Sequence[dict[str, Any]]) -> bool:
    """Publish events together (their confirms awaited at once); an outage loses them all
    and is logged once."""
    try:
        await bus.publish_events([(routing_key(value), codec.dumps(value)) for value in values])
    except Unavailable as exc:
        log.warning("could not publish %d events: %s", len(values), exc.message)
        return False
    return True


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on dots, ``*`` is one word, ``#`` zero or more.
    An empty key has no words, as RabbitMQ reads it (``*`` misses it, ``#`` matches it)."""
    return _match(pattern.split("."), key.split(".") if key else [])


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
