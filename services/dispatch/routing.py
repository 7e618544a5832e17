"""Routing decisions: which push node receives which message. Pure: data in, plan out.

Dispatch looks up where each message's readers are in the directory (one pipelined call
for users, one for group and broadcast channels), then asks ``plan_routes`` where to send
what. A node receives each message at most once, however many of its connections read
the channel; a channel nobody reads gets nothing routed (readers recover from the store
when they connect).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from herald.core.model import parse_channel

Recipient = tuple[str, str]  # (app_id, user_id)
ChannelKey = tuple[str, str]  # (app_id, channel) for group:<name> and broadcast


def recipients_of(messages: Iterable[Mapping[str, Any]]) -> list[Recipient]:
    """The users whose nodes must be looked up, each once, in first-seen order."""
    seen: dict[Recipient, None] = {}
    for message in messages:
        kind, name = parse_channel(message["channel"])
        if kind == "user":
            seen.setdefault((message["app"], name), None)
    return list(seen)


def shared_channels_of(messages: Iterable[Mapping[str, Any]]) -> list[ChannelKey]:
    """The group and broadcast channels whose nodes must be looked up, each once."""
    seen: dict[ChannelKey, None] = {}
    for message in messages:
        kind, _ = parse_channel(message["channel"])
        if kind != "user":
            seen.setdefault((message["app"], message["channel"]), None)
    return list(seen)


def in_channel_order(messages: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Messages with each channel's together and in offset order, channels in first-seen
    order. Concurrent requests can publish a channel's offsets swapped; put together in
    one node body they then arrive in order, and a push node writes a run of consecutive
    offsets at once, where an offset arriving before its predecessor costs store reads."""
    by_channel: dict[ChannelKey, list[Mapping[str, Any]]] = {}
    for message in messages:
        by_channel.setdefault((message["app"], message["channel"]), []).append(message)
    ordered: list[Mapping[str, Any]] = []
    for run in by_channel.values():
        if len(run) > 1:
            run.sort(key=_offset)
        ordered.extend(run)
    return ordered


def _offset(message: Mapping[str, Any]) -> int:
    return int(message["offset"])


def plan_routes(
    messages: Iterable[Mapping[str, Any]],
    nodes_by_recipient: Mapping[Recipient, Iterable[str]],
    nodes_by_channel: Mapping[ChannelKey, Iterable[str]] | None = None,
) -> dict[str, list[Mapping[str, Any]]]:
    """Group messages by destination node, preserving their order within each node."""
    routes: dict[str, list[Mapping[str, Any]]] = {}
    for message in messages:
        kind, name = parse_channel(message["channel"])
        if kind == "user":
            nodes = nodes_by_recipient.get((message["app"], name), ())
        else:
            nodes = (nodes_by_channel or {}).get((message["app"], message["channel"]), ())
        for node in nodes:
            routes.setdefault(node, []).append(message)
    return routes
