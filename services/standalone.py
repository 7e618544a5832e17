"""``herald dev``: all four services in one process, embedded parts, data in ./herald-data.

A newcomer gets a working system with one command and no servers: SQLite instead of
MongoDB, in-process queues instead of RabbitMQ, dicts instead of Redis, unless the
matching HERALD_*_URL is set. The operator token and a demo app are kept in the data
directory so the printed curl commands keep working across restarts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from herald.adapters import NEEDS, Adapters, make_adapters
from herald.adapters.store.base import Store
from herald.core.credentials import new_app_id, secret_hash
from herald.core.model import App
from herald.core.settings import ROLES, Settings, generate_secret
from herald.messaging.apikeys import issue_api_key
from herald.ops.admin import DEV_URLS_FILE
from herald.ops.runtime import Part, nothing
from herald.services.roles import BUILDERS

DEMO_APP_NAME = "demo"


def _load_json(path: Path) -> dict[str, str]:
    try:
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return {}


def _save_json(path: Path, value: dict[str, str]) -> None:
    path.write_text(json.dumps(value, indent=2))
    os.chmod(path, 0o600)


def dev_settings(base: Settings, port_base: int) -> dict[str, Settings]:
    """One settings object per role, sharing the data directory, secrets and namespace."""
    data = Path(base.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    secrets_file = data / "dev-secrets.json"
    stored = _load_json(secrets_file)
    admin = base.admin_token or stored.get("admin_token") or generate_secret()
    service = base.service_token or stored.get("service_token") or generate_secret()
    _save_json(secrets_file, {"admin_token": admin, "service_token": service})
    ports = {role: port_base + index + 1 for index, role in enumerate(ROLES)}
    auth_url = f"http://{_client_host(base.host)}:{ports['auth']}"
    return {
        role: dataclasses.replace(
            base,
            role=role,
            port=ports[role],
            admin_token=admin,
            service_token=service,
            auth_url=auth_url,
            node_id=f"{base.host}:{ports[role]}" if role == "push" else base.node_id,
            # The console and chat pages come from the push node's origin and call auth and
            # collect on their own ports.
            cors_origins=base.cors_origins or _page_origins(base.host, ports["push"]),
        )
        for role in ROLES
    }


def _page_origins(host: str, port: int) -> tuple[str, ...]:
    hosts = dict.fromkeys([_client_host(host), "127.0.0.1", "localhost"])
    return tuple(f"http://{name}:{port}" for name in hosts)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


async def ensure_demo_app(store: Store, data_dir: str) -> dict[str, str]:
    """The demo app and a working key for it, creating (or re-keying) it when needed."""
    path = Path(data_dir) / "demo-app.json"
    demo = _load_json(path)
    if demo.get("app_id") and demo.get("api_key") and await store.get_app(demo["app_id"]):
        if await store.app_for_key(secret_hash(demo["api_key"])) == demo["app_id"]:
            return demo
    app_id = demo.get("app_id") if demo.get("app_id") and await store.get_app(demo["app_id"]) else None
    if app_id is None:
        app_id = new_app_id()
        await store.insert_app(App(app_id, DEMO_APP_NAME, time.time()))
    demo = {"app_id": app_id, "api_key": await issue_api_key(store, app_id)}
    _save_json(path, demo)
    return demo


def build(base: Settings, port_base: int) -> tuple[list[Part], dict[str, Settings], dict[str, str]]:
    """Every part of every service over one set of adapters; ``demo`` fills in at start-up."""
    per_role = dev_settings(base, port_base)
    # Where `herald status` finds this process's snapshot without being told.
    host = _client_host(base.host)
    _save_json(Path(base.data_dir) / DEV_URLS_FILE, {role: f"http://{host}:{s.port}" for role, s in per_role.items()})
    adapters: Adapters = make_adapters(base, frozenset().union(*NEEDS.values()))
    demo: dict[str, str] = {}
    assert adapters.store is not None
    store = adapters.store

    async def create_demo() -> None:
        demo.update(await ensure_demo_app(store, base.data_dir))

    parts = [*adapters.parts(), Part("demo-app", create_demo, nothing)]
    for role in ROLES:
        extra: dict[str, Any] = {}
        if role == "push":
            console_urls = {
                "auth_url": f"http://{host}:{per_role['auth'].port}",
                "collect_url": f"http://{host}:{per_role['collect'].port}",
            }
            extra = {"demo_app": lambda: demo, "console_urls": console_urls}
        parts.extend(BUILDERS[role](per_role[role], adapters, **extra))
    return parts, per_role, demo


def _demo_line(push: Settings) -> str:
    if push.demo_public:
        return (
            "  WARNING: HERALD_DEMO_PUBLIC=1: /demo/* hands the demo app's API key and tokens for any\n"
            "           user to every client that reaches this port, not only this machine.\n"
        )
    return (
        "  demo      /demo/* (the demo app's key, tokens for any user) answers loopback clients only;\n"
        "            HERALD_DEMO_PUBLIC=1 serves it to every client.\n"
    )


def banner(per_role: dict[str, Settings], demo: dict[str, str]) -> str:
    host = _client_host(per_role["auth"].host)
    url = {role: f"http://{host}:{s.port}" for role, s in per_role.items()}
    ws = f"ws://{host}:{per_role['push'].port}/ws"
    admin = per_role["auth"].admin_token
    data_dir = per_role["auth"].data_dir
    key = demo.get("api_key", "")
    return f"""
Herald is running (standalone: one process, data in {data_dir}).

  auth      {url["auth"]}       API docs: {url["auth"]}/docs
  collect   {url["collect"]}       API docs: {url["collect"]}/docs
  dispatch  {url["dispatch"]}       health: {url["dispatch"]}/healthz
  push      {ws}
  console   http://{host}:{per_role["push"].port}/       (connect, send, see who is online)
  chat      http://{host}:{per_role["push"].port}/chat   (open it in two windows)
  ops       http://{host}:{per_role["push"].port}/ops    (the operator's view; asks for the token below)

{_demo_line(per_role["push"])}
  operator token (HERALD_ADMIN_TOKEN): {admin}
  demo app id:  {demo.get("app_id", "")}
  demo API key: {key}

Try it:
  curl -s -X POST {url["auth"]}/v1/tokens -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' -d '{{"user_id": "alice"}}'
  # connect a WebSocket to {ws}?token=<token> , then:
  curl -s -X POST {url["collect"]}/v1/messages -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' -d '{{"to": {{"users": ["alice"]}}, "event": "hi", "data": 1}}'

Stop with Ctrl-C.
"""
