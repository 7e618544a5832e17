"""Prometheus metrics, one registry per process, served at ``/metrics``.

Names follow ``herald_<service>_<what>_<unit>``. Counting is cheap (a lock-free add per
event, or per batch on hot paths), so the hot paths count batches, never per socket.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# The life of a message, one counter per stage; ``via`` says who sent it (an HTTP caller or a
# client publishing from its socket). Delivered counts frames written, one per connection.
messages_accepted = Counter(
    "herald_messages_accepted", "Messages stored and queued for dispatch", ["via"], registry=REGISTRY
)
messages_dispatched = Counter("herald_messages_dispatched", "Messages dispatch routed to push nodes", registry=REGISTRY)
messages_delivered = Counter("herald_messages_delivered", "Message frames written to client sockets", registry=REGISTRY)
messages_acked = Counter("herald_messages_acked", "Client acks received (cumulative, per channel)", registry=REGISTRY)
# From acceptance (the message's ``ts``) to the frame written on a live connection; replays
# after a reconnect are left out, they measure how long the client was away.
delivery_latency = Histogram(
    "herald_delivery_latency_seconds",
    "Accepted-to-written latency of live message frames",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
queue_depth = Gauge("herald_queue_depth", "Messages waiting in a bus queue", ["queue"], registry=REGISTRY)
# collect's outbox: messages in the store whose publish the bus never confirmed. Pending after a
# sweep means the bus keeps refusing collect: they are safe in the store but not moving.
outbox_pending = Gauge(
    "herald_outbox_pending",
    "Accepted messages past the outbox's grace still unpublished after its last sweep",
    registry=REGISTRY,
)
outbox_republished = Counter(
    "herald_outbox_republished", "Accepted messages the outbox sweeper published again", registry=REGISTRY
)
# A message of a work queue (dispatch, receipts, retries) that failed more than the delivery
# limit and was parked in the dead letters, as seen by the consumer of this process that
# failed it last; ``herald_queue_depth{queue="dead"}`` is how many are parked now.
dead_lettered = Counter(
    "herald_dead_lettered",
    "Bus messages parked in the dead letters after too many failures",
    ["queue"],
    registry=REGISTRY,
)
# Every error answer by its code: HTTP error bodies on the APIs, `error` frames and refused
# publishes on sockets.
errors = Counter("herald_errors", "Errors answered, by service and code", ["service", "code"], registry=REGISTRY)
http_requests = Counter(
    "herald_http_requests", "HTTP requests answered, by service and status", ["service", "status"], registry=REGISTRY
)

push_handshakes = Counter("herald_push_handshakes", "WebSocket connections admitted (token checked)", registry=REGISTRY)

push_bus_messages = Counter("herald_push_bus_messages", "Messages this node received from its queue", registry=REGISTRY)
push_connections = Gauge("herald_push_connections", "Open WebSocket connections on this node", registry=REGISTRY)
push_closes = Counter("herald_push_closes", "Connections the node closed, by close code", ["code"], registry=REGISTRY)
push_handshakes_rejected = Counter(
    "herald_push_handshakes_rejected", "Handshakes refused before the upgrade", ["reason"], registry=REGISTRY
)
push_tokens_screened = Counter(
    "herald_push_tokens_screened",
    "Connect tokens screened on the node: refused without asking auth (malformed, refused_before), "
    "or asked in the low-priority lane (suspect_source)",
    ["reason"],
    registry=REGISTRY,
)
push_sockets_dropped = Counter(
    "herald_push_sockets_dropped",
    "Sockets dropped or refused before their handshake ended: deadline, evicted (node full of "
    "handshakes), node_full (connection cap)",
    ["reason"],
    registry=REGISTRY,
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
