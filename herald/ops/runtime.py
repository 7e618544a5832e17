"""Start parts in order, run until SIGTERM/SIGINT, stop them in reverse within a deadline.

A service process is a list of ``Part``s: the adapters it opens, then its servers and
workers. The same list runs one service (cluster) or all four (standalone). Start-up
failure stops what was started and exits non-zero, so a supervisor sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from herald.web.coalesced import CoalescedHttpToolsProtocol
from herald.web.middleware import BodyLimit

log = logging.getLogger("herald.runtime")

STOP_TIMEOUT_S = 10.0

_stop: asyncio.Event | None = None
_exit_code = 0


def fail(reason: str) -> None:
    """Stop this process with a non-zero exit code, so its supervisor restarts it."""
    global _exit_code
    log.error("stopping on a fatal condition: %s", reason)
    _exit_code = 1
    if _stop is not None:
        _stop.set()


def run(main: Awaitable[int]) -> int:
    """Run a process's main coroutine, on uvloop when it is installed: its transports cost less
    CPU and memory per socket than asyncio's, which is most of a push node's work."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Part:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    stop_timeout_s: float = STOP_TIMEOUT_S


async def nothing() -> None:
    """The start or stop of a part that has none."""
    return None


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: several servers share one process here."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def served(app: ASGIApp, body_limit: int, cors_origins: Sequence[str] = ()) -> ASGIApp:
    """What an HTTP service's port serves: the app behind its body limit, and CORS when
    browsers of other origins may call it."""
    stack: ASGIApp = BodyLimit(app, body_limit)
    if cors_origins:
        # Outermost, so refusals (401, 413, 429) carry the headers a browser needs to read them.
        stack = CORSMiddleware(
            stack,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    return stack


class HttpServer:
    """One FastAPI app on one port, as a ``Part``."""

    def __init__(
        self, name: str, app: FastAPI, host: str, port: int, body_limit: int, cors_origins: Sequence[str] = ()
    ) -> None:
        self.name = name
        config = uvicorn.Config(
            served(app, body_limit, cors_origins),
            host=host,
            port=port,
            # httptools, not h11: a C parser, a seventh of a small request's CPU less;
            # a response's head and body leave in one system call (coalesced.py).
            http=CoalescedHttpToolsProtocol,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name=f"http-{self.name}")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self.name}: HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, STOP_TIMEOUT_S)

    def part(self) -> Part:
        return Part(f"{self.name}-http", self.start, self.stop)


async def run_parts(
    parts: Sequence[Part],
    *,
    on_started: Callable[[], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Run until a signal (or ``stop_event``, or ``fail``); return the process exit code."""
    global _stop, _exit_code
    stop = _stop = stop_event or asyncio.Event()
    _exit_code = 0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    started: list[Part] = []
    code = 0
    try:
        for part in parts:
            await part.start()
            started.append(part)
            log.debug("started %s", part.name)
        if on_started:
            on_started()
        await stop.wait()
        log.info("stopping")
    except Exception:
        log.exception("start-up failed")
        code = 1
    finally:
        for part in reversed(started):
            try:
                await asyncio.wait_for(part.stop(), part.stop_timeout_s)
            except Exception:
                log.exception("stopping %s failed", part.name)
                code = code or 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        _stop = None
    return code or _exit_code
