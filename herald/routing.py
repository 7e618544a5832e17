"""Routing decisions: which push node receives which message. Pure: data in, plan out.

Dispatch looks up the nodes of every recipient in the directory (one pipelined call),
then asks ``plan_routes`` where to send what. A node receives each message at most once,
however many of the user's connections it holds; a recipient with no connection gets
nothing routed (they recover from the store when they connect).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from herald.model import parse_channel

Recipient = tuple[str, str]  # (app_id, user_id)


def recipients_of(messages: Iterable[Mapping[str, Any]]) -> list[Recipient]:
    """The users whose nodes must be looked up, each once, in first-seen order."""
    seen: dict[Recipient, None] = {}
    for message in messages:
        kind, name = parse_channel(message["channel"])
        if kind == "user":
            seen.setdefault((message["app"], name), None)
    return list(seen)


def plan_routes(
    messages: Iterable[Mapping[str, Any]],
    nodes_by_recipient: Mapping[Recipient, Iterable[str]],
) -> dict[str, list[Mapping[str, Any]]]:
    """Group messages by destination node, preserving their order within each node."""
    routes: dict[str, list[Mapping[str, Any]]] = {}
    for message in messages:
        kind, name = parse_channel(message["channel"])
        if kind != "user":
            continue
        for node in nodes_by_recipient.get((message["app"], name), ()):
            routes.setdefault(node, []).append(message)
    return routes
