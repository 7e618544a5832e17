"""Every ``HERALD_*`` variable with its default and meaning: the README's configuration
table and docs/CONFIGURATION.md are checked against this list (tests/unit/test_readme.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "HERALD_AMQP_URL",
        None,
        "RabbitMQ URL, or several comma-separated (the nodes of a cluster, tried in turn); "
        "unset means the in-process bus (standalone only)",
    ),
    Variable(
        "HERALD_QUEUE_TYPE",
        "quorum",
        "type of the durable RabbitMQ queues (dispatch, receipts, retries, dead letters): quorum or classic",
    ),
    Variable(
        "HERALD_DELIVERY_LIMIT",
        "20",
        "deliveries of a dispatch, receipts or retry message whose handling keeps failing before it is dead-lettered",
    ),
    Variable(
        "HERALD_REDIS_URL",
        None,
        "Redis URL (in cluster mode any node; in sentinel mode only its credentials and database count); "
        "unset means the in-process directory (standalone only)",
    ),
    Variable(
        "HERALD_REDIS_MODE", "single", "single, cluster (a Redis Cluster) or sentinel (a primary found by Sentinel)"
    ),
    Variable("HERALD_REDIS_SENTINELS", "", "sentinel mode: the sentinels as host:port, comma-separated"),
    Variable("HERALD_REDIS_MASTER", "", "sentinel mode: the name the sentinels know the primary by"),
    Variable("HERALD_MONGO_URL", None, "MongoDB URL; unset means the SQLite store (standalone only)"),
    Variable("HERALD_MONGO_DB", "<namespace>", "MongoDB database name"),
    Variable("HERALD_DATA_DIR", "./herald-data", "where standalone keeps its SQLite file and demo app"),
    Variable("HERALD_HOST", "127.0.0.1", "address this service listens on"),
    Variable("HERALD_PORT", "per service", "port: auth 8001, collect 8002, dispatch 8003, push 8004"),
    Variable("HERALD_NODE_ID", "<host>:<port>", "push node id: its queue name and presence routes"),
    Variable("HERALD_AUTH_URL", "http://127.0.0.1:8001", "where push nodes reach auth"),
    Variable("HERALD_NAMESPACE", "herald", "prefix of every key, exchange, queue and database ([a-z0-9_])"),
    Variable("HERALD_ADMIN_TOKEN", None, "operator credential (create apps, rotate keys); at least 32 characters"),
    Variable(
        "HERALD_SERVICE_TOKEN", None, "credential services use among themselves (introspection); at least 32 characters"
    ),
    Variable("HERALD_CORS_ORIGINS", "", "browser origins allowed to call auth and collect (comma-separated, or *)"),
    Variable("HERALD_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable("HERALD_HEARTBEAT_S", "10", "node heartbeat and WebSocket ping interval; a node silent for 3x is dead"),
    Variable("HERALD_MAX_PAYLOAD", "65536", "largest message `data`, bytes of JSON"),
    Variable("HERALD_MAX_BATCH", "1000", "most messages in one batch request, and users in one `to`"),
    Variable(
        "HERALD_MAX_BODY",
        "4 x HERALD_MAX_PAYLOAD, at least 1048576",
        "largest request body collect reads, bytes; a larger one is answered 413 before it is parsed",
    ),
    Variable("HERALD_MESSAGE_TTL_S", "604800", "message retention for replay when `ttl_s` is not given"),
    Variable("HERALD_TOKEN_TTL_S", "3600", "connect token lifetime when `ttl_s` is not given"),
    Variable("HERALD_PREFETCH", "64", "bus messages a consumer holds unacknowledged"),
    Variable("HERALD_STORE_TIMEOUT_S", "3", "how long a store call may wait for its server before 503"),
    Variable("HERALD_RATE_PER_S", "0", "default messages per second per app, shared by all collect replicas; 0: none"),
    Variable("HERALD_MAX_CONNECTIONS_PER_USER", "100", "default live connections per user; more get 429 at connect"),
    Variable("HERALD_MAX_GROUPS_PER_USER", "1000", "default groups one user may belong to"),
    Variable("HERALD_CLIENT_FRAMES_PER_S", "50", "default frames per second from one client; more get an error frame"),
    Variable(
        "HERALD_REUSE_PORT", "0", "1: push processes share HERALD_PORT (SO_REUSEPORT); give each its own HERALD_NODE_ID"
    ),
    Variable(
        "HERALD_HANDSHAKE_TIMEOUT_S",
        "10",
        "push: a socket not upgraded or answered this long after accept is dropped, whatever it trickled",
    ),
    Variable(
        "HERALD_MAX_HANDSHAKES",
        "4000",
        "push: sockets in their handshake per node; past it the oldest of them is dropped for the newcomer",
    ),
    Variable(
        "HERALD_MAX_HANDSHAKES_PER_ADDRESS",
        "16",
        "push: handshakes read at once from one source address; more wait their turn (the deadline runs)",
    ),
    Variable("HERALD_MAX_CONNECTIONS", "50000", "push: sockets per node; past it a newcomer gets 503 node_full"),
    Variable(
        "HERALD_PUBLISH_HOOK_TIMEOUT_S",
        "2",
        "push: overall deadline of one publish hook call (a free slot, the request, the whole answer)",
    ),
    Variable(
        "HERALD_PUBLISH_HOOK_CONCURRENCY", "16", "push: publish hook calls in flight per app; more wait for a slot"
    ),
    Variable("HERALD_DRAIN_S", "10", "on SIGTERM, how long a push node waits for its clients to go (close 1012)"),
    Variable(
        "HERALD_WEBHOOK_BLOCK_PRIVATE",
        "0",
        "1: refuse webhook and publish hook URLs that resolve to private, loopback or link-local addresses",
    ),
    Variable(
        "HERALD_DEMO_PUBLIC",
        "0",
        "herald dev only: 1 serves the demo's /demo/* (its API key, tokens for any user) to every client, "
        "not only to loopback ones",
    ),
    Variable(
        "HERALD_TRACEMALLOC",
        None,
        "diagnostics: a directory; the process traces its allocations and writes tracemalloc snapshots there",
    ),
    Variable("HERALD_TRACEMALLOC_S", "60", "diagnostics: seconds between those snapshots"),
    Variable(
        "HERALD_MALLOC_TRIM_S",
        "60",
        "seconds between returns of the C allocator's free pages to the system (glibc malloc_trim); 0: never",
    ),
)
