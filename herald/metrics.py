"""Prometheus metrics, one registry per process, served at ``/metrics``.

Names follow ``herald_<service>_<what>_<unit>``. Counting is cheap (a lock-free add per
event, or per batch on hot paths), so the hot paths count batches, never per socket.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

push_bus_messages = Counter("herald_push_bus_messages", "Messages this node received from its queue", registry=REGISTRY)
push_frames_sent = Counter("herald_push_frames_sent", "Message frames written to sockets", registry=REGISTRY)
push_connections = Gauge("herald_push_connections", "Open WebSocket connections on this node", registry=REGISTRY)
push_closes = Counter("herald_push_closes", "Connections the node closed, by close code", ["code"], registry=REGISTRY)
push_handshakes_rejected = Counter(
    "herald_push_handshakes_rejected", "Handshakes refused before the upgrade", ["reason"], registry=REGISTRY
)

# Each event ends as exactly one of delivered, failed (refused or out of attempts) or dropped
# (no room to retry, malformed, or abandoned at shutdown); ``retried`` counts failed attempts
# that will be tried again.
webhooks = Counter("herald_webhooks", "Webhook outcomes", ["outcome"], registry=REGISTRY)


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sample(text: str, name: str, labels: str = "") -> float:
    """Read one sample from exposition text (for tests and `herald status`); ``labels`` as
    written there, e.g. ``code="4008"``. An absent labelled sample reads as 0."""
    wanted = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    if labels:
        return 0.0
    raise KeyError(name)
