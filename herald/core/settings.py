"""One frozen settings object per process, read once from ``HERALD_*`` variables.

A missing or malformed value stops start-up with the variable's name, so an operator
never discovers a typo at the first message. Every variable is listed in ``VARIABLES``
(name, default, meaning), which is also what the README's configuration table shows.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from herald.core.env import (
    Env,
    addresses,
    check_secret,
    choice,
    integer,
    origins,
    url,
    urls,
)
from herald.core.errors import ConfigError
from herald.core.names import QUEUE_TYPES

DEFAULT_PORTS = {"auth": 8001, "collect": 8002, "dispatch": 8003, "push": 8004}
ROLES = tuple(DEFAULT_PORTS)
_NAMESPACE_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# The largest HERALD_MAX_BATCH (and app max_batch): request schemas bound their lists by it,
# whatever the configured value, which the handlers then apply.
MAX_BATCH_CEILING = 100_000

REDIS_MODES = ("single", "cluster", "sentinel")


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
    malloc_trim_s: float = 60.0

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
        if role not in (*ROLES, "standalone"):
            raise ConfigError(f"unknown role {role!r}; expected one of {', '.join(ROLES)} or standalone")
        read = Env(os.environ if env is None else env)
        identity = _identity(read, role)
        settings = cls(
            role=role,
            **identity,
            **_engines(read, identity["namespace"]),
            **_limits(read),
            **_edges(read),
        )
        check_secret("HERALD_ADMIN_TOKEN", settings.admin_token)
        check_secret("HERALD_SERVICE_TOKEN", settings.service_token)
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


def generate_secret() -> str:
    return secrets.token_urlsafe(24)


def _identity(read: Env, role: str) -> dict[str, Any]:
    """Who the process is and whom it trusts: namespace, address, node id, tokens, logs."""
    namespace = read.text("HERALD_NAMESPACE", "herald")
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigError(f"HERALD_NAMESPACE: {namespace!r} must match [a-z0-9_]{{1,32}}")
    log_level = read.text("HERALD_LOG_LEVEL", "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"HERALD_LOG_LEVEL: {log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    port = read.integer("HERALD_PORT", DEFAULT_PORTS.get(role, 8001), 0, 65535)
    host = read.text("HERALD_HOST", "127.0.0.1")
    node_id = read.text("HERALD_NODE_ID", f"{host}:{port}")
    if not _NODE_ID_RE.match(node_id):
        raise ConfigError(f"HERALD_NODE_ID: {node_id!r} must match [A-Za-z0-9_.:-]{{1,64}}")
    return {
        "namespace": namespace,
        "host": host,
        "port": port,
        "node_id": node_id,
        "auth_url": read.text("HERALD_AUTH_URL", "http://127.0.0.1:8001").rstrip("/"),
        "admin_token": read.text("HERALD_ADMIN_TOKEN", ""),
        "service_token": read.text("HERALD_SERVICE_TOKEN", ""),
        "log_level": log_level,
        "data_dir": read.text("HERALD_DATA_DIR", "./herald-data"),
        "tracemalloc_dir": read.text("HERALD_TRACEMALLOC", ""),
        "tracemalloc_s": read.number("HERALD_TRACEMALLOC_S", 60, 1, 86400),
        "malloc_trim_s": read.number("HERALD_MALLOC_TRIM_S", 60, 0, 86400),
    }


def _engines(read: Env, namespace: str) -> dict[str, Any]:
    """RabbitMQ, Redis and MongoDB: where they are and how they are used."""
    amqp = read.get("HERALD_AMQP_URL")
    redis = read.get("HERALD_REDIS_URL")
    mongo = read.get("HERALD_MONGO_URL")
    redis_mode = choice("HERALD_REDIS_MODE", read.text("HERALD_REDIS_MODE", "single"), REDIS_MODES)
    sentinels_raw = read.get("HERALD_REDIS_SENTINELS")
    sentinels = addresses("HERALD_REDIS_SENTINELS", sentinels_raw) if sentinels_raw else ()
    master = read.text("HERALD_REDIS_MASTER", "")
    if redis_mode == "sentinel" and not sentinels:
        raise ConfigError("HERALD_REDIS_SENTINELS: required when HERALD_REDIS_MODE=sentinel (host:port,...)")
    if redis_mode == "sentinel" and not master:
        raise ConfigError("HERALD_REDIS_MASTER: required when HERALD_REDIS_MODE=sentinel (the primary's name)")
    if redis_mode == "cluster" and not redis:
        raise ConfigError("HERALD_REDIS_URL: required when HERALD_REDIS_MODE=cluster (any node of the cluster)")
    return {
        "amqp_url": urls("HERALD_AMQP_URL", amqp, ("amqp", "amqps")) if amqp else None,
        "queue_type": choice("HERALD_QUEUE_TYPE", read.text("HERALD_QUEUE_TYPE", "quorum"), QUEUE_TYPES),
        "delivery_limit": read.integer("HERALD_DELIVERY_LIMIT", 20, 1, 10_000),
        "prefetch": read.integer("HERALD_PREFETCH", 64, 1, 65535),
        "redis_url": url("HERALD_REDIS_URL", redis, ("redis", "rediss", "unix")) if redis else None,
        "redis_mode": redis_mode,
        "redis_sentinels": sentinels,
        "redis_master": master,
        "mongo_url": url("HERALD_MONGO_URL", mongo, ("mongodb", "mongodb+srv")) if mongo else None,
        "mongo_db": read.text("HERALD_MONGO_DB", namespace),
        "store_timeout_s": read.number("HERALD_STORE_TIMEOUT_S", 3, 0.1, 120),
    }


def _limits(read: Env) -> dict[str, Any]:
    """What messages, tokens, users and clients may be and do."""
    max_body = read.get("HERALD_MAX_BODY")
    return {
        "heartbeat_s": read.number("HERALD_HEARTBEAT_S", 10, 0.05, 3600),
        "max_payload": read.integer("HERALD_MAX_PAYLOAD", 65536, 16, 16 * 1024 * 1024),
        "max_batch": read.integer("HERALD_MAX_BATCH", 1000, 1, MAX_BATCH_CEILING),
        "max_body": integer("HERALD_MAX_BODY", max_body, 1024, 256 * 1024 * 1024) if max_body else 0,
        "message_ttl_s": read.integer("HERALD_MESSAGE_TTL_S", 604800, 1, 3650 * 86400),
        "token_ttl_s": read.integer("HERALD_TOKEN_TTL_S", 3600, 1, 365 * 86400),
        "drain_s": read.number("HERALD_DRAIN_S", 10, 0, 600),
        "rate_per_s": read.number("HERALD_RATE_PER_S", 0, 0, 1e9),
        "max_connections_per_user": read.integer("HERALD_MAX_CONNECTIONS_PER_USER", 100, 1, 1_000_000),
        "max_groups_per_user": read.integer("HERALD_MAX_GROUPS_PER_USER", 1000, 1, 1_000_000),
        "client_frames_per_s": read.number("HERALD_CLIENT_FRAMES_PER_S", 50, 0.1, 1e6),
    }


def _edges(read: Env) -> dict[str, Any]:
    """What faces the network: sockets, handshakes, hooks, browsers, the demo."""
    return {
        "reuse_port": read.flag("HERALD_REUSE_PORT"),
        "handshake_timeout_s": read.number("HERALD_HANDSHAKE_TIMEOUT_S", 10, 0.2, 600),
        "max_handshakes": read.integer("HERALD_MAX_HANDSHAKES", 4000, 1, 1_000_000),
        "max_handshakes_per_address": read.integer("HERALD_MAX_HANDSHAKES_PER_ADDRESS", 16, 1, 1_000_000),
        "max_connections": read.integer("HERALD_MAX_CONNECTIONS", 50000, 1, 10_000_000),
        "publish_hook_timeout_s": read.number("HERALD_PUBLISH_HOOK_TIMEOUT_S", 2, 0.1, 60),
        "publish_hook_concurrency": read.integer("HERALD_PUBLISH_HOOK_CONCURRENCY", 16, 1, 10_000),
        "cors_origins": origins(read.text("HERALD_CORS_ORIGINS", "")),
        "webhook_block_private": read.flag("HERALD_WEBHOOK_BLOCK_PRIVATE"),
        "demo_public": read.flag("HERALD_DEMO_PUBLIC"),
    }
