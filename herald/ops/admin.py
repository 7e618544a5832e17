"""The operator commands of the ``herald`` CLI: ``status``, ``apps create``, ``token``, ``dlq``.

``apps create`` and ``token`` talk to auth over HTTP like any client, so they work against
``herald dev`` and a cluster alike. ``status`` reads a cluster's Redis and RabbitMQ, or
asks a push node's ``/ops/snapshot``: ``herald dev``'s when no server URL is set, since
its directory and queues live inside its process. Against ``herald dev`` they need no
configuration: the operator token and the push URL are read from its data directory, and
the keys of apps created here are kept there (mode 0600) so that ``herald token APP USER``
finds them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from herald.adapters import make_bus, make_directory, make_store
from herald.core.errors import ConfigError, Unavailable
from herald.core.settings import Settings
from herald.ops import cluster_status, dlq, snapshot
from herald_client import HeraldAPIError, Operator, Publisher

APPS_FILE = "apps.json"
DEV_SECRETS_FILE = "dev-secrets.json"
DEMO_APP_FILE = "demo-app.json"
DEV_URLS_FILE = "dev-urls.json"
DEFAULT_DEV_PUSH_URL = "http://127.0.0.1:8004"
SNAPSHOT_TIMEOUT_S = 10.0
SNAPSHOT_HINT = (
    "start `herald dev` (or pass --url of a push node and its operator token), "
    "or set HERALD_REDIS_URL and HERALD_AMQP_URL as the cluster's services have them"
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def admin_token(settings: Settings) -> str:
    token = settings.admin_token or _read_json(Path(settings.data_dir) / DEV_SECRETS_FILE).get("admin_token")
    if not token:
        raise ConfigError(
            "no operator token: set HERALD_ADMIN_TOKEN (or run this where `herald dev` keeps its data, "
            f"{settings.data_dir})"
        )
    return str(token)


def app_key(settings: Settings, app: str, given: str | None) -> str:
    """The API key for ``app`` (an app id or name): given, saved by ``apps create``, or the demo's."""
    if given:
        return given
    data = Path(settings.data_dir)
    saved = _read_json(data / APPS_FILE)
    for entry in saved.values():
        if isinstance(entry, dict) and app in (entry.get("app_id"), entry.get("name")) and entry.get("api_key"):
            return str(entry["api_key"])
    demo = _read_json(data / DEMO_APP_FILE)
    if app in ("demo", demo.get("app_id")) and demo.get("api_key"):
        return str(demo["api_key"])
    raise ConfigError(f"no API key for app {app!r}: pass --key or set HERALD_APP_KEY")


async def create_app(settings: Settings, token: str, name: str) -> dict[str, str]:
    async with Operator(settings.auth_url, token) as operator:
        return await operator.create_app(name)


def save_app_key(settings: Settings, name: str, created: dict[str, str]) -> Path | None:
    """Keep the new key where ``herald token`` looks, when there is a data directory here."""
    data = Path(settings.data_dir)
    if not data.is_dir():
        return None
    path = data / APPS_FILE
    saved = _read_json(path)
    saved[created["app_id"]] = {"app_id": created["app_id"], "name": name, "api_key": created["api_key"]}
    path.write_text(json.dumps(saved, indent=2))
    os.chmod(path, 0o600)
    return path


async def mint_token(
    settings: Settings,
    key: str,
    user_id: str,
    ttl_s: int | None,
    device: str | None,
    publish: list[str] | None,
) -> str:
    collect_url = settings.auth_url  # unused by ``token``; the Publisher wants both
    async with Publisher(settings.auth_url, collect_url, key) as publisher:
        return await publisher.token(user_id, ttl_s=ttl_s, device=device, publish=publish)


async def status_report(settings: Settings, url: str | None = None) -> str:
    """The cluster read from its Redis and RabbitMQ; or, without their URLs (or given a push
    node's ``url``), from a push node's snapshot: ``herald dev`` keeps its parts in its own
    process, so only it can say what they hold."""
    if url or not (settings.uses_redis and settings.amqp_url):
        return await snapshot_report(settings, url or dev_push_url(settings))
    directory, bus = make_directory(settings), make_bus(settings)
    store = make_store(settings) if settings.mongo_url else None
    opened: list[Any] = []
    try:
        for adapter in (directory, bus, store):
            if adapter is not None:
                await adapter.start()
                opened.append(adapter)
        snapshot = await cluster_status.gather(directory, bus, store, int(time.time() * 1000))
    finally:
        for adapter in reversed(opened):
            await adapter.close()
    return cluster_status.render(snapshot)


def dev_dispatch_url(settings: Settings) -> str:
    """Where the dispatch of this data directory's ``herald dev`` listens (``dev-urls.json``)."""
    return str(_read_json(Path(settings.data_dir) / DEV_URLS_FILE).get("dispatch") or dlq.DEV_DISPATCH_URL)


def dev_push_url(settings: Settings) -> str:
    """Where the ``herald dev`` of this data directory listens for browsers (it says so in
    ``dev-urls.json``), else the default push port."""
    return str(_read_json(Path(settings.data_dir) / DEV_URLS_FILE).get("push") or DEFAULT_DEV_PUSH_URL)


async def snapshot_report(settings: Settings, url: str) -> str:
    token = admin_token(settings)
    target = f"{url.rstrip('/')}/ops/snapshot"
    try:
        async with httpx.AsyncClient(timeout=SNAPSHOT_TIMEOUT_S) as client:
            response = await client.get(target, headers={"Authorization": f"Bearer {token}"})
    except httpx.TransportError as exc:
        raise ConfigError(f"no push node answers at {url} ({exc!r}): {SNAPSHOT_HINT}") from None
    if response.status_code != 200:
        raise ConfigError(f"{target} answered {response.status_code} {response.text[:300]}: {SNAPSHOT_HINT}")
    return snapshot.render_document(response.json())


def run(command: str, args: Any) -> int:
    """Run one operator command; errors a user can fix are one line on stderr, exit 1."""
    settings = Settings.from_env("standalone")
    try:
        if command == "status":
            print(asyncio.run(status_report(settings, getattr(args, "url", None))))
        elif command == "apps-create":
            created = asyncio.run(create_app(settings, admin_token(settings), args.name))
            print(f"app_id   {created['app_id']}\napi_key  {created['api_key']}")
            saved = save_app_key(settings, args.name, created)
            where = f"saved in {saved} for `herald token {args.name} <user>`" if saved else "keep it"
            print(f"(the key is shown once; {where})", file=sys.stderr)
        elif command == "token":
            key = app_key(settings, args.app, args.key or os.environ.get("HERALD_APP_KEY"))
            print(asyncio.run(mint_token(settings, key, args.user, args.ttl, args.device, args.publish)))
        elif command.startswith("dlq-"):
            # A cluster's dead letters are read from RabbitMQ; herald dev's through its dispatch.
            token = "" if settings.amqp_url else admin_token(settings)
            ids, every = getattr(args, "ids", []), getattr(args, "all", False)
            action = command.removeprefix("dlq-")
            url = args.url or dev_dispatch_url(settings)
            print(asyncio.run(dlq.run(settings, action, ids, every, args.limit, url, token)))
        else:
            raise ValueError(command)
    except ConfigError as exc:
        print(f"herald: {exc.message}", file=sys.stderr)
        return 1
    except HeraldAPIError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 1
    except Unavailable as exc:
        print(f"herald: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, httpx.TransportError) as exc:
        print(f"herald: cannot reach {settings.auth_url}: {exc!r}", file=sys.stderr)
        return 1
    return 0
