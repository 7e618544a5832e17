"""A push node in this process (SQLite, the memory directory and bus), for what a test
cannot do to a node in another process: make its client look like it came from another
address (tests may only use the loopback), or break one of its dependencies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from herald.adapters import NEEDS, make_adapters
from herald.core.settings import Settings
from herald.services.push import socket as push_socket
from herald.services.push.main import build
from herald.services.push.server import PushServer

DEMO = {"app_id": "app_00000000000000dd", "api_key": "hk_demo-key-of-the-dev-process"}
ADMIN = "operator-token-for-push-tests-" + "z" * 8


@dataclass
class Node:
    server: PushServer
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def seen_from(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Every client of in-process nodes appears to come from ``address`` (the kernel's peer
    address, which the node reads, is replaced)."""
    monkeypatch.setattr(push_socket, "peer_address", lambda _transport: address)


def _raising(failure: BaseException) -> Callable[..., Awaitable[None]]:
    async def fail(*_: Any, **__: Any) -> None:
        raise failure

    return fail


@contextlib.asynccontextmanager
async def push_node(
    directory: Path,
    env: Mapping[str, str] | None = None,
    demo: bool = True,
    failures: Mapping[str, BaseException] | None = None,
) -> AsyncIterator[Node]:
    """A started node; ``failures`` makes adapter methods raise (``{"directory.ping": exc}``)."""
    settings = Settings.from_env(
        "standalone",
        {"HERALD_DATA_DIR": str(directory), "HERALD_PORT": "0", "HERALD_ADMIN_TOKEN": ADMIN, **(env or {})},
    )
    adapters = make_adapters(settings, NEEDS["push"])
    for where, failure in (failures or {}).items():
        adapter, _, method = where.partition(".")
        setattr(getattr(adapters, adapter), method, _raising(failure))
    extra: dict[str, Any] = {"demo_app": lambda: DEMO} if demo else {}
    parts = [*adapters.parts(), *build(settings, adapters, **extra)]
    [server] = [part.start.__self__ for part in parts if part.name == "push-server"]  # type: ignore[attr-defined]
    started = []
    try:
        for part in parts:
            await part.start()
            started.append(part)
        yield Node(server, settings)
    finally:
        for part in reversed(started):
            await part.stop()
