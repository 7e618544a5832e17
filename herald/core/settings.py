"""One frozen settings object per process, read once from ``HERALD_*`` variables.

A missing or malformed value stops start-up with the variable's name, so an operator
never discovers a typo at the first message. Every variable is listed in ``VARIABLES``
(name, default, meaning), which is also what the README's configuration table shows.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from herald.core.errors import ConfigError
from herald.core.names import QUEUE_TYPES

DEFAULT_PORTS = {"auth": 8001, "collect": 8002, "dispatch": 8003, "push": 8004}
ROLES = tuple(DEFAULT_PORTS)
_NAMESPACE_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
)

# The largest HERALD_MAX_BATCH (and app max_batch): request schemas bound their lists by it,
# whatever the configured value, which the handlers then apply.
MAX_BATCH_CEILING = 100_000

# Operator and service tokens are bearer secrets compared on every call: long enough that
# guessing is hopeless (32 characters of token_urlsafe are 192 bits).
MIN_SECRET_LENGTH = 32

REDIS_MODES = ("single", "cluster", "sentinel")


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} is outside {lo}..{hi}")
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}: {value} is outside {lo}..{hi}")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"HERALD_CORS_ORIGINS: {origin!r} is not * or an http(s):// origin")
    return origins


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        raise ConfigError(f"{name}: expected a {'/'.join(schemes)}:// URL, got {raw!r}")
    return raw


def _urls(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    """A comma-separated list of URLs, each checked; kept as given (``Settings.amqp_urls`` splits it)."""
    parts = [part.strip() for part in raw.split(",")]
    if not all(parts):
        raise ConfigError(f"{name}: an empty entry in {raw!r}")
    for part in parts:
        _url(name, part, schemes)
    return ",".join(parts)


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
    return value


def _addresses(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port`` entries, comma-separated (IPv6 hosts in brackets: ``[::1]:26379``)."""
    found = []
    for entry in (part.strip() for part in raw.split(",")):
        host, colon, port = entry.rpartition(":")
        host = host.strip("[]")
        if not entry or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {entry!r} is not host:port")
        found.append((host, int(port)))
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    role: str
    namespace: str = "herald"
    host: str = "127.0.0.1"
    port: int = 8001
    node_id: str = ""
    amqp_url: str | None = None
    queue_type: str = "quorum"
    delivery_limit: int = 20
    redis_url: str | None = None
    redis_mode: str = "single"
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master: str = ""
    mongo_url: str | None = None
    mongo_db: str = "herald"
    data_dir: str = "./herald-data"
    auth_url: str = "http://127.0.0.1:8001"
    admin_token: str = ""
    service_token: str = ""
    log_level: str = "INFO"
    heartbeat_s: float = 10.0
    max_payload: int = 65536
    max_batch: int = 1000
    message_ttl_s: int = 604800
    token_ttl_s: int = 3600
    prefetch: int = 64
    store_timeout_s: float = 3.0
    drain_s: float = 10.0
    rate_per_s: float = 0.0
    max_connections_per_user: int = 100
    max_groups_per_user: int = 1000
    client_frames_per_s: float = 50.0
    reuse_port: bool = False
    handshake_timeout_s: float = 10.0
    max_handshakes: int = 4000
    max_handshakes_per_address: int = 16
    max_connections: int = 50_000
    publish_hook_timeout_s: float = 2.0
    publish_hook_concurrency: int = 16
    cors_origins: tuple[str, ...] = ()
    webhook_block_private: bool = False
    max_body: int = 0  # 0: derived from max_payload (``body_limit``)
    demo_public: bool = False

    @property
    def body_limit(self) -> int:
        """The largest request body collect reads: ``HERALD_MAX_BODY``, or room for a
        message of ``max_payload`` bytes four times over (JSON escaping, the envelope), and
        never under 1 MiB so a batch of small messages fits."""
        return self.max_body or max(1024 * 1024, 4 * self.max_payload)

    tracemalloc_dir: str = ""
    tracemalloc_s: float = 60.0

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The RabbitMQ nodes to try, in order (``HERALD_AMQP_URL`` may list several)."""
        return tuple(self.amqp_url.split(",")) if self.amqp_url else ()

    @property
    def uses_redis(self) -> bool:
        """A Redis directory rather than the in-process one: a URL, or sentinels to ask."""
        return bool(self.redis_url) or self.redis_mode == "sentinel"

    @property
    def presence_ttl_s(self) -> float:
        """Routes outlive three missed heartbeats, no more: a dead node's users stop being routed to it."""
        return self.heartbeat_s * 3

    @property
    def embedded(self) -> bool:
        return self.role == "standalone"

    @classmethod
    def from_env(cls, role: str, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable; cluster roles must name their servers and tokens."""
        env = os.environ if env is None else env
        if role not in (*ROLES, "standalone"):
            raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)} or standalone")

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return default if value is None or value == "" else value

        def parse(name: str, default: str, cast: Callable[[str, str], Any]) -> Any:
            return cast(name, get(name, default) or default)

        namespace = get("HERALD_NAMESPACE", "herald") or "herald"
        if not _NAMESPACE_RE.match(namespace):
            raise ConfigError(f"HERALD_NAMESPACE: {namespace!r} must match [a-z0-9_]{{1,32}}")
        log_level = (get("HERALD_LOG_LEVEL", "INFO") or "INFO").upper()
        if log_level not in _LOG_LEVELS:
            raise ConfigError(f"HERALD_LOG_LEVEL: {log_level!r} is not one of {', '.join(_LOG_LEVELS)}")

        port = parse("HERALD_PORT", str(DEFAULT_PORTS.get(role, 8001)), lambda n, r: _int(n, r, 0, 65535))
        host = get("HERALD_HOST", "127.0.0.1") or "127.0.0.1"
        node_id = get("HERALD_NODE_ID", f"{host}:{port}") or ""
        if not _NODE_ID_RE.match(node_id):
            raise ConfigError(f"HERALD_NODE_ID: {node_id!r} must match [A-Za-z0-9_.:-]{{1,64}}")

        amqp = get("HERALD_AMQP_URL")
        redis = get("HERALD_REDIS_URL")
        mongo = get("HERALD_MONGO_URL")
        redis_mode = _choice("HERALD_REDIS_MODE", get("HERALD_REDIS_MODE", "single") or "single", REDIS_MODES)
        sentinels_raw = get("HERALD_REDIS_SENTINELS")
        sentinels = _addresses("HERALD_REDIS_SENTINELS", sentinels_raw) if sentinels_raw else ()
        master = get("HERALD_REDIS_MASTER", "") or ""
        if redis_mode == "sentinel" and not sentinels:
            raise ConfigError("HERALD_REDIS_SENTINELS: required when HERALD_REDIS_MODE=sentinel (host:port,...)")
        if redis_mode == "sentinel" and not master:
            raise ConfigError("HERALD_REDIS_MASTER: required when HERALD_REDIS_MODE=sentinel (the primary's name)")
        if redis_mode == "cluster" and not redis:
            raise ConfigError("HERALD_REDIS_URL: required when HERALD_REDIS_MODE=cluster (any node of the cluster)")
        max_body = get("HERALD_MAX_BODY")
        settings = cls(
            role=role,
            namespace=namespace,
            host=host,
            port=port,
            node_id=node_id,
            amqp_url=_urls("HERALD_AMQP_URL", amqp, ("amqp", "amqps")) if amqp else None,
            queue_type=_choice("HERALD_QUEUE_TYPE", get("HERALD_QUEUE_TYPE", "quorum") or "quorum", QUEUE_TYPES),
            delivery_limit=parse("HERALD_DELIVERY_LIMIT", "20", lambda n, r: _int(n, r, 1, 10_000)),
            redis_url=_url("HERALD_REDIS_URL", redis, ("redis", "rediss", "unix")) if redis else None,
            redis_mode=redis_mode,
            redis_sentinels=sentinels,
            redis_master=master,
            mongo_url=_url("HERALD_MONGO_URL", mongo, ("mongodb", "mongodb+srv")) if mongo else None,
            mongo_db=get("HERALD_MONGO_DB", namespace) or namespace,
            data_dir=get("HERALD_DATA_DIR", "./herald-data") or "./herald-data",
            auth_url=(get("HERALD_AUTH_URL", "http://127.0.0.1:8001") or "").rstrip("/"),
            admin_token=get("HERALD_ADMIN_TOKEN", "") or "",
            service_token=get("HERALD_SERVICE_TOKEN", "") or "",
            log_level=log_level,
            heartbeat_s=parse("HERALD_HEARTBEAT_S", "10", lambda n, r: _float(n, r, 0.05, 3600)),
            max_payload=parse("HERALD_MAX_PAYLOAD", "65536", lambda n, r: _int(n, r, 16, 16 * 1024 * 1024)),
            max_batch=parse("HERALD_MAX_BATCH", "1000", lambda n, r: _int(n, r, 1, MAX_BATCH_CEILING)),
            message_ttl_s=parse("HERALD_MESSAGE_TTL_S", "604800", lambda n, r: _int(n, r, 1, 3650 * 86400)),
            token_ttl_s=parse("HERALD_TOKEN_TTL_S", "3600", lambda n, r: _int(n, r, 1, 365 * 86400)),
            prefetch=parse("HERALD_PREFETCH", "64", lambda n, r: _int(n, r, 1, 65535)),
            store_timeout_s=parse("HERALD_STORE_TIMEOUT_S", "3", lambda n, r: _float(n, r, 0.1, 120)),
            drain_s=parse("HERALD_DRAIN_S", "10", lambda n, r: _float(n, r, 0, 600)),
            rate_per_s=parse("HERALD_RATE_PER_S", "0", lambda n, r: _float(n, r, 0, 1e9)),
            max_connections_per_user=parse(
                "HERALD_MAX_CONNECTIONS_PER_USER", "100", lambda n, r: _int(n, r, 1, 1_000_000)
            ),
            max_groups_per_user=parse("HERALD_MAX_GROUPS_PER_USER", "1000", lambda n, r: _int(n, r, 1, 1_000_000)),
            client_frames_per_s=parse("HERALD_CLIENT_FRAMES_PER_S", "50", lambda n, r: _float(n, r, 0.1, 1e6)),
            reuse_port=parse("HERALD_REUSE_PORT", "0", lambda n, r: _int(n, r, 0, 1)) == 1,
            handshake_timeout_s=parse("HERALD_HANDSHAKE_TIMEOUT_S", "10", lambda n, r: _float(n, r, 0.2, 600)),
            max_handshakes=parse("HERALD_MAX_HANDSHAKES", "4000", lambda n, r: _int(n, r, 1, 1_000_000)),
            max_handshakes_per_address=parse(
                "HERALD_MAX_HANDSHAKES_PER_ADDRESS", "16", lambda n, r: _int(n, r, 1, 1_000_000)
            ),
            max_connections=parse("HERALD_MAX_CONNECTIONS", "50000", lambda n, r: _int(n, r, 1, 10_000_000)),
            publish_hook_timeout_s=parse("HERALD_PUBLISH_HOOK_TIMEOUT_S", "2", lambda n, r: _float(n, r, 0.1, 60)),
            publish_hook_concurrency=parse("HERALD_PUBLISH_HOOK_CONCURRENCY", "16", lambda n, r: _int(n, r, 1, 10_000)),
            cors_origins=_origins(get("HERALD_CORS_ORIGINS", "") or ""),
            webhook_block_private=parse("HERALD_WEBHOOK_BLOCK_PRIVATE", "0", lambda n, r: _int(n, r, 0, 1)) == 1,
            max_body=_int("HERALD_MAX_BODY", max_body, 1024, 256 * 1024 * 1024) if max_body else 0,
            demo_public=parse("HERALD_DEMO_PUBLIC", "0", lambda n, r: _int(n, r, 0, 1)) == 1,
            tracemalloc_dir=get("HERALD_TRACEMALLOC", "") or "",
            tracemalloc_s=parse("HERALD_TRACEMALLOC_S", "60", lambda n, r: _float(n, r, 1, 86400)),
        )
        _check_secret("HERALD_ADMIN_TOKEN", settings.admin_token)
        _check_secret("HERALD_SERVICE_TOKEN", settings.service_token)
        settings.check_cluster_requirements()
        return settings

    def check_cluster_requirements(self) -> None:
        """A cluster process without its servers would silently run embedded parts nobody else sees."""
        if self.embedded:
            return
        needs: dict[str, tuple[str, ...]] = {
            "auth": (
                "HERALD_MONGO_URL",
                "HERALD_REDIS_URL",
                "HERALD_AMQP_URL",
                "HERALD_ADMIN_TOKEN",
                "HERALD_SERVICE_TOKEN",
            ),
            "collect": ("HERALD_MONGO_URL", "HERALD_REDIS_URL", "HERALD_AMQP_URL"),
            "dispatch": ("HERALD_MONGO_URL", "HERALD_REDIS_URL", "HERALD_AMQP_URL"),
            "push": ("HERALD_MONGO_URL", "HERALD_REDIS_URL", "HERALD_AMQP_URL", "HERALD_SERVICE_TOKEN"),
        }
        present = {
            "HERALD_MONGO_URL": self.mongo_url,
            # Sentinel mode finds Redis through the sentinels; the URL is optional there.
            "HERALD_REDIS_URL": self.uses_redis,
            "HERALD_AMQP_URL": self.amqp_url,
            "HERALD_ADMIN_TOKEN": self.admin_token,
            "HERALD_SERVICE_TOKEN": self.service_token,
        }
        missing = [name for name in needs[self.role] if not present[name]]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: required by `herald {self.role}` (cluster mode)")


def _check_secret(name: str, value: str) -> None:
    """An operator or service token that is set must be long: a short one can be guessed."""
    if value and len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{name}: {len(value)} characters; use at least {MIN_SECRET_LENGTH} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def generate_secret() -> str:
    return secrets.token_urlsafe(24)
