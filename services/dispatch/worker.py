"""dispatch's worker: route accepted messages to the push nodes of their recipients.

For each bus body: one directory call for every recipient's nodes and one for every group
or broadcast channel's nodes (the per-node reader counts push nodes keep), one body per node,
all node publishes confirmed, then the input is acknowledged (by returning). If the
directory or the bus fails the handler raises, the input is redelivered, and the node
publishes happen again: push nodes drop duplicates by offset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from herald import codec, metrics
from herald.bus.base import Bus
from herald.directory.base import Directory
from herald.errors import Unavailable
from herald.routing import plan_routes, recipients_of, shared_channels_of
from herald.store.base import Store
from services.dispatch.stats import DispatchStats

log = logging.getLogger("herald.dispatch")


class DispatchWorker:
    def __init__(self, bus: Bus, directory: Directory, store: Store, stats: DispatchStats | None = None) -> None:
        self._bus = bus
        self._stats = stats
        self._directory = directory
        self._store = store
        self.routed = 0

    async def handle(self, body: bytes) -> None:
        try:
            messages = codec.decode_batch(body)
            recipients = recipients_of(messages)
            shared = shared_channels_of(messages)
        except (ValueError, KeyError, TypeError) as exc:
            # Redelivering a body nobody can read would loop forever; the store still has
            # its messages, so their recipients get them on their next connect.
            log.error("dropping an unreadable dispatch body (%d bytes): %s", len(body), exc)
            return
        nodes = await self._directory.nodes_for(recipients) if recipients else {}
        channel_nodes = await self._directory.nodes_for_channels(shared) if shared else {}
        routes = plan_routes(messages, nodes, channel_nodes)
        bodies = {
            (node, index): payload
            for node, routed in routes.items()
            for index, payload in enumerate(codec.encode_batches(routed))
        }
        if bodies:
            await self._publish(bodies)
        self.routed += len(messages)
        metrics.messages_dispatched.inc(len(messages))
        if self._stats is not None:
            self._stats.count(messages)
        if log.isEnabledFor(logging.DEBUG):
            _log_routes(messages, routes)
        try:
            await self._store.advance_status([m["id"] for m in messages], "dispatched")
        except Unavailable as exc:
            log.warning("could not record %d messages as dispatched: %s", len(messages), exc.message)

    async def _publish(self, bodies: dict[tuple[str, int], bytes]) -> None:
        """Publish each node's first body together, then its next ones, keeping per-node order."""
        rounds = max(index for _, index in bodies) + 1
        for index in range(rounds):
            await self._bus.publish_to_nodes({node: b for (node, i), b in bodies.items() if i == index})


def _log_routes(messages: list[dict[str, Any]], routes: Mapping[str, list[Mapping[str, Any]]]) -> None:
    nodes_of: dict[str, list[str]] = {}
    for node, routed in routes.items():
        for message in routed:
            nodes_of.setdefault(message["id"], []).append(node)
    for message in messages:
        log.debug(
            "routed to %s",
            ", ".join(sorted(nodes_of.get(message["id"], []))) or "no live node",
            extra={"app_id": message["app"], "message_id": message["id"]},
        )
