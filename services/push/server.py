"""The push node's WebSocket server: token check before the upgrade, then the frame loop.

The token is checked against auth in ``process_request``, before any socket is upgraded:
a bad or expired token gets HTTP 401 and no WebSocket exists. ``/healthz`` and
``/readyz`` are answered on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from herald import codec, metrics
from herald.appconfig import AppConfigs
from herald.credentials import secret_hash
from herald.directory.base import Directory
from herald.errors import HeraldError, Unavailable
from herald.protocol import (
    CLOSE_DRAINING,
    CLOSE_TRY_LATER,
    PONG_FRAME,
    Ack,
    ClientFrame,
    FrameError,
    Ping,
    Publish,
    Resume,
    error_frame,
    parse_client_frame,
    reply_error_frame,
    welcome_frame,
)
from services.push.connections import Connection, FrameBudget
from services.push.demo import DemoBackend, query_value
from services.push.handshake import (
    choose_subprotocol,
    device_from_request,
    offered_subprotocols,
    token_from_request,
)
from services.push.introspect import Identity, TokenChecker
from services.push.node import PushNode
from services.push.publish import ClientPublishing

log = logging.getLogger("herald.push")

MAX_FRAME_BYTES = 64 * 1024
# How long a new connection may take to send ``resume`` before its backlog starts at the
# stored cursors. Clients that resume send it first thing, so they never wait.
RESUME_WAIT_S = 0.25

# Served on the WebSocket port: the browser client (its one copy lives in clients/js) and
# the chat page built on it.
_ROOT = Path(__file__).resolve().parents[2]
_PAGES = Path(__file__).resolve().parent / "static"
STATIC_FILES: dict[str, tuple[Path, str]] = {
    "/herald.js": (_ROOT / "clients" / "js" / "herald.js", "text/javascript; charset=utf-8"),
    "/chat": (_PAGES / "chat.html", "text/html; charset=utf-8"),
    "/": (_PAGES / "console.html", "text/html; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Where the console page finds auth and collect; empty means the page's own origin
    (one address in front of every service, as deploy/nginx.conf does)."""

    auth_url: str = ""
    collect_url: str = ""


@dataclass(frozen=True, slots=True)
class ConnectLimits:
    """Process defaults; an app's own limits (``AppConfig.limits``) override them when set."""

    connections_per_user: int
    frames_per_s: float


@dataclass(frozen=True, slots=True)
class Admitted:
    """What ``_process_request`` learned about a connection, handed to ``_handle``."""

    identity: Identity
    device: str | None
    token_hash: str
    frames_per_s: float


def http_response(status: int, body: bytes, content_type: str) -> Response:
    # The WebSocket server closes the connection after any answer but an upgrade: saying so
    # keeps HTTP clients from sending their next request on a socket about to close.
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status, HTTPStatus(status).phrase, headers, body)


def json_response(status: int, body: dict[str, Any]) -> Response:
    return http_response(status, codec.dumps(body), "application/json")


def _count_error(code: str) -> None:
    metrics.errors.labels("push", code).inc()


def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


class PushServer:
    def __init__(
        self,
        node: PushNode,
        checker: TokenChecker,
        directory: Directory,
        configs: AppConfigs,
        limits: ConnectLimits,
        host: str,
        port: int,
        heartbeat_s: float,
        drain_s: float,
        publishing: ClientPublishing,
        readiness: Sequence[Callable[[], Awaitable[None]]] = (),
        demo: DemoBackend | None = None,
        reuse_port: bool = False,
        console: ConsoleConfig | None = None,
    ) -> None:
        self.node = node
        self._checker = checker
        self._directory = directory
        self._configs = configs
        self._limits = limits
        self._host = host
        self._port = port
        self._heartbeat_s = heartbeat_s
        self._drain_s = drain_s
        self._readiness = readiness
        self._publishing = publishing
        self._demo = demo
        self._reuse_port = reuse_port
        self._console = console or ConsoleConfig()
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            select_subprotocol=lambda _conn, offered: choose_subprotocol(offered),
            compression=None,
            max_size=MAX_FRAME_BYTES,
            ping_interval=self._heartbeat_s,
            ping_timeout=self._heartbeat_s * 2,
            close_timeout=2,
            reuse_port=self._reuse_port,
        )

    async def stop(self) -> None:
        """Drain: stop accepting, leave routing, ask every client to reconnect elsewhere (1012),
        and wait for them up to the deadline. They resume on another node: nothing is lost."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        await self.node.withdraw(leaving=True)
        closing = [conn.ws.close(CLOSE_DRAINING, "node draining") for conn in self.node.connections]
        if closing:
            log.info("draining %d connections", len(closing))
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(close) for close in closing], timeout=max(self._drain_s, 0.1)
            )
            for task in pending:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            try:
                for check in self._readiness:
                    await check()
            except HeraldError as exc:
                return json_response(exc.status, exc.to_body())
            return json_response(200, {"status": "ready"})
        if path == "/metrics":
            text, content_type = metrics.exposition()
            return http_response(200, text, content_type)
        if path in STATIC_FILES:
            return self._static(path)
        if path == "/console/config":
            return json_response(
                200,
                {
                    "auth_url": self._console.auth_url,
                    "collect_url": self._console.collect_url,
                    "demo": self._demo is not None,
                },
            )
        if path.startswith("/demo/") and self._demo is not None:
            return await self._demo_answer(path, request.path)
        if path != "/ws":
            return _error(404, "not_found", "WebSocket endpoint is /ws")
        offered = offered_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
        token = token_from_request(request.path, request.headers.get("Authorization"), offered)
        if token is None:
            metrics.push_handshakes_rejected.labels("missing_token").inc()
            return _error(401, "missing_token", "send a connect token: Authorization: Bearer, subprotocol or ?token=")
        try:
            identity = await self._checker.identity(token)
        except Unavailable as exc:
            metrics.push_handshakes_rejected.labels("auth_unavailable").inc()
            return _error(503, exc.code, exc.message)
        if identity is None:
            metrics.push_handshakes_rejected.labels("invalid_token").inc()
            return _error(401, "invalid_token", "the connect token is unknown, revoked or expired")
        try:
            limits = (await self._configs.get(identity.app_id)).limits
            most = limits.connections_per_user or self._limits.connections_per_user
            held = await self._directory.connections_of(identity.app_id, identity.user_id)
        except Unavailable as exc:
            metrics.push_handshakes_rejected.labels("unavailable").inc()
            return _error(503, exc.code, exc.message)
        if len(held) >= most:
            metrics.push_handshakes_rejected.labels("too_many_connections").inc()
            message = f"this user already holds {len(held)} connections; at most {most}"
            return _error(429, "too_many_connections", message)
        metrics.push_handshakes.inc()
        # Handed to _handle on the connection itself: nothing to clean up if the upgrade fails.
        connection.herald_admitted = Admitted(  # type: ignore[attr-defined]
            identity,
            device_from_request(request.path) or identity.device,
            secret_hash(token),
            limits.frames_per_s or self._limits.frames_per_s,
        )
        return None

    @staticmethod
    def _static(path: str) -> Response:
        file, content_type = STATIC_FILES[path]
        try:
            body = file.read_bytes()
        except OSError:
            return _error(404, "not_found", f"{path} is not installed with this node")
        return http_response(200, body, content_type)

    async def _demo_answer(self, path: str, target: str) -> Response:
        assert self._demo is not None
        query = parse_qs(urlsplit(target).query)
        try:
            if path == "/demo/session":
                return json_response(
                    200, await self._demo.session(query_value(query, "user"), query_value(query, "room"))
                )
            if path == "/demo/online":
                return json_response(200, await self._demo.online(query_value(query, "room")))
            if path == "/demo/app":
                return json_response(200, self._demo.app())
        except HeraldError as exc:
            return json_response(exc.status, exc.to_body())
        return _error(404, "not_found", "the demo answers /demo/session, /demo/online and /demo/app")

    async def _handle(self, ws: ServerConnection) -> None:
        admitted: Admitted = ws.herald_admitted  # type: ignore[attr-defined]
        identity = admitted.identity
        conn = Connection(
            ws,
            uuid.uuid4().hex,
            identity.app_id,
            identity.user_id,
            admitted.device,
            token_hash=admitted.token_hash,
            publish=identity.publish,
            frames=FrameBudget(admitted.frames_per_s),
        )
        try:
            await self.node.attach(conn)
            try:
                positions = await self.node.load_channels(conn)
            except Unavailable:
                await ws.close(CLOSE_TRY_LATER, "store unavailable, reconnect later")
                return
            await ws.send(welcome_frame(conn.conn_id, conn.user_id, self._heartbeat_s, positions))
            first = await self._first_frame(ws)
            resume = self._parse(first) if first is not None else None
            if isinstance(resume, Resume):
                positions.update(self._readable(conn, resume, ws))
            self.node.begin_all(conn, positions)
            if first is not None and not isinstance(resume, Resume):
                await self._reply(conn, first)
            async for raw in ws:
                await self._reply(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            await self.node.detach(conn)

    async def _first_frame(self, ws: ServerConnection) -> str | bytes | None:
        """The client's first frame if it comes within ``RESUME_WAIT_S``: a ``resume`` there
        sets where the backlog starts; otherwise it starts at the stored cursors."""
        try:
            return await asyncio.wait_for(ws.recv(), RESUME_WAIT_S)
        except TimeoutError:
            return None

    @staticmethod
    def _parse(raw: str | bytes) -> ClientFrame | FrameError:
        try:
            return parse_client_frame(raw)
        except FrameError as exc:
            return exc

    def _readable(self, conn: Connection, resume: Resume, ws: ServerConnection) -> dict[str, int]:
        """The resume positions this connection may use; the others get an error frame."""
        refused = [channel for channel in resume.positions if not conn.may_read(channel)]
        if refused:
            message = f"not your channels: {', '.join(sorted(refused)[:5])}"
            _count_error("forbidden_channel")
            broadcast([ws], error_frame("forbidden_channel", message))
        return {channel: offset for channel, offset in resume.positions.items() if conn.may_read(channel)}

    async def _reply(self, conn: Connection, raw: str | bytes) -> None:
        now = time.monotonic()
        frame = self._parse(raw)
        if not conn.frames.take(now):
            _count_error("rate_limited")
            message = f"more than {conn.frames.rate_per_s:g} frames per second; frames are being dropped"
            if isinstance(frame, Publish):
                await conn.ws.send(reply_error_frame(frame.seq, "rate_limited", message))
            elif now - conn.frames.warned_at >= 1.0:
                # At most one error frame a second: a flood must not make us send a flood.
                conn.frames.warned_at = now
                await conn.ws.send(error_frame("rate_limited", message))
            return
        if isinstance(frame, FrameError):
            _count_error(frame.code)
            if frame.seq is not None:
                await conn.ws.send(reply_error_frame(frame.seq, frame.code, frame.message))
            else:
                await conn.ws.send(error_frame(frame.code, frame.message))
        elif isinstance(frame, Publish):
            await conn.ws.send(await self._publishing.reply(conn, frame))
        elif isinstance(frame, Ping):
            await conn.ws.send(PONG_FRAME)
        elif isinstance(frame, Ack):
            if conn.may_read(frame.channel):
                self.node.record_ack(conn, frame.channel, frame.offset)
            else:
                _count_error("forbidden_channel")
                await conn.ws.send(error_frame("forbidden_channel", f"{frame.channel} is not one of your channels"))
        elif isinstance(frame, Resume):
            self.node.begin(conn, self._readable(conn, frame, conn.ws))
