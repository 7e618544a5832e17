"""The push node's WebSocket server: token check before the upgrade, then client frames.

The token is checked against auth in ``_process_request``, before any socket is upgraded:
a bad or expired token gets HTTP 401 and no WebSocket exists. ``/healthz``, ``/readyz``,
``/metrics`` and the console are answered on the same port. Sockets are
``services.push.socket.Socket``s: frames are answered from the event loop's callbacks, and
a task exists only while a connection starts or awaits a publish.

Every socket passes the admission gate at accept (``services.push.gate``: a handshake
deadline from accept, caps per node and per source address, a connection cap), and every
token the token screen (``services.push.screen``) before auth is asked. Request targets
are never logged whole: a query string may carry ``?token=``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from herald.core.credentials import secret_hash
from herald.core.errors import Unavailable
from herald.messaging.appconfig import AppConfigs
from herald.ops import metrics
from herald.ops.readiness import NOT_READY, check_name, run_check
from herald.services.push.demo import DemoBackend
from herald.services.push.gate import GateLimits, HandshakeGate
from herald.services.push.handshake import (
    Identity,
    choose_subprotocol,
    device_from_request,
    offered_subprotocols,
    request_path,
    token_from_request,
)
from herald.services.push.http_answers import (
    STATIC_FILES,
    error_response,
    http_response,
    json_response,
    path_only,
    static_answer,
)
from herald.services.push.introspect import TokenChecker
from herald.services.push.node import PushNode
from herald.services.push.ops_page import OpsSnapshots
from herald.services.push.protocol import CLOSE_DRAINING
from herald.services.push.publish import ClientPublishing
from herald.services.push.readers import Reader
from herald.services.push.screen import TokenScreen
from herald.services.push.sessions import Sessions
from herald.services.push.socket import Keepalive, Socket

log = logging.getLogger("herald.push")

MAX_FRAME_BYTES = 64 * 1024
# Connections waiting in the kernel for accept(): a reconnect storm arrives all at once.
BACKLOG = 4096


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
    """What ``_process_request`` learned about a connection that may upgrade."""

    identity: Identity
    device: str | None
    token_hash: str
    frames_per_s: float
    checked_at: float  # when its token check began (epoch seconds): later kicks apply to it


def _counterror_response(code: str) -> None:
    metrics.errors.labels("push", code).inc()


class PushServer:
    def __init__(
        self,
        node: PushNode,
        checker: TokenChecker,
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
        ops: OpsSnapshots | None = None,
        gate: GateLimits | None = None,
    ) -> None:
        self.node = node
        self._screen = TokenScreen(checker)
        self._gate: HandshakeGate[Socket] = HandshakeGate(gate or GateLimits())
        self._configs = configs
        self._limits = limits
        self._host = host
        self._port = port
        self._heartbeat_s = heartbeat_s
        self._drain_s = drain_s
        self._readiness = readiness
        self._sessions = Sessions(node, self._screen, publishing, heartbeat_s)
        self._demo = demo
        self._reuse_port = reuse_port
        self._console = console or ConsoleConfig()
        self._ops = ops
        self._server: asyncio.Server | None = None
        self._sockets: set[Socket] = set()
        self._keepalive = Keepalive(heartbeat_s, heartbeat_s * 2)
        self._sweeper: asyncio.Task[None] | None = None
        self._deadlines: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_socket, self._host, self._port, reuse_port=self._reuse_port or None, backlog=BACKLOG
        )
        self._sweeper = loop.create_task(self._keepalive.run(lambda: self._sockets), name="push-keepalive")
        self._deadlines = loop.create_task(self._enforce_deadlines(), name="push-handshake-deadlines")

    async def stop(self) -> None:
        """Drain: stop accepting, leave routing, ask every client to reconnect elsewhere (1012),
        and wait for them up to the deadline. They resume on another node: nothing is lost."""
        if self._server is None:
            return
        self._server.close()
        await self.node.routes.withdraw(leaving=True)
        closing = [reader.sink.close(CLOSE_DRAINING, "node draining") for reader in self.node.readers if reader.sink]
        if closing:
            log.info("draining %d connections", len(closing))
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(close) for close in closing], timeout=max(self._drain_s, 0.1)
            )
            for task in pending:
                task.cancel()
        for sock in list(self._sockets):
            sock.abort()
        for sweeper in (self._sweeper, self._deadlines):
            if sweeper is not None:
                sweeper.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._sessions.stop()

    # Socket events (services.push.socket.SocketEvents) --------------------------------

    def _new_socket(self) -> Socket:
        sock = Socket(self, MAX_FRAME_BYTES, _select_subprotocol)
        self._sockets.add(sock)
        return sock

    def accepted(self, sock: Socket) -> None:
        admission = self._gate.admit(sock, sock.address, len(self._sockets) - 1, time.monotonic())
        if admission.refused is not None:
            metrics.push_sockets_dropped.labels(admission.refused).inc()
            sock.respond(
                error_response(503, admission.refused, "this node holds all the connections it may; try another")
            )
            return
        for old in admission.evicted:
            metrics.push_sockets_dropped.labels("evicted").inc()
            old.abort()
        for turn in admission.resumed:
            turn.resume()
        if admission.wait:
            sock.hold()

    def _handshake_over(self, sock: Socket) -> None:
        """``sock`` is answered or gone: its place in the gate goes to the next of its address."""
        turn = self._gate.done(sock)
        if turn is not None:
            turn.resume()

    async def _enforce_deadlines(self) -> None:
        """Drop the sockets whose handshake outlived the deadline, counted from accept."""
        period = min(0.5, self._gate.limits.handshake_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            for sock in self._gate.expired(time.monotonic()):
                metrics.push_sockets_dropped.labels("deadline").inc()
                self._handshake_over(sock)
                sock.abort()

    def request(self, sock: Socket, request: Request) -> None:
        self._spawn(self._open(sock, request))

    def message(self, sock: Socket, data: str | bytes) -> None:
        self._sessions.message(sock, data)

    def closing(self, sock: Socket) -> bool:
        return self._sessions.closing(sock)

    def lost(self, sock: Socket) -> None:
        self._sockets.discard(sock)
        self._handshake_over(sock)
        self._sessions.lost(sock)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process_request(self, request: Request, address: str = "") -> Response | Admitted:
        path = request_path(request.path)
        if path == "/ws":
            return await self._admit(request, address)
        return await self._plain(path, request, address)

    async def _plain(self, path: str, request: Request, address: str) -> Response:
        """Everything on the port but the WebSocket: health, metrics, pages, ops, the demo."""
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            for check in self._readiness:
                if not await run_check(check, check_name(check)):
                    return json_response(503, Unavailable(NOT_READY).to_body())
            return json_response(200, {"status": "ready"})
        if path == "/metrics":
            text, content_type = metrics.exposition()
            return http_response(200, text, content_type)
        if path in STATIC_FILES:
            return static_answer(path)
        if path == "/console/config":
            return json_response(
                200,
                {
                    "auth_url": self._console.auth_url,
                    "collect_url": self._console.collect_url,
                    "demo": self._demo is not None and self._demo.serves(address),
                },
            )
        if path.startswith("/ops/") and self._ops is not None:
            return json_response(*await self._ops.answer(path, request.headers.get("Authorization"), address))
        if path.startswith("/demo/") and self._demo is not None:
            if not self._demo.serves(address):
                message = "the demo answers loopback clients only (HERALD_DEMO_PUBLIC=1 serves everyone)"
                return error_response(403, "demo_loopback_only", message)
            return await self._demo.answer(path, request.path)
        return error_response(404, "not_found", "WebSocket endpoint is /ws")

    async def _admit(self, request: Request, address: str) -> Response | Admitted:
        """A WebSocket request: its token checked, its user's connection count bounded."""
        offered = offered_subprotocols(request.headers.get("Sec-WebSocket-Protocol"))
        token = token_from_request(request.path, request.headers.get("Authorization"), offered)
        if token is None:
            metrics.push_handshakes_rejected.labels("missing_token").inc()
            return error_response(
                401, "missing_token", "send a connect token: Authorization: Bearer, subprotocol or ?token="
            )
        checked_at = time.time()
        try:
            identity = await self._screen.identity(token, address)
        except Unavailable as exc:
            reason = "try_later" if exc.code == "try_later" else "auth_unavailable"
            metrics.push_handshakes_rejected.labels(reason).inc()
            return error_response(503, exc.code, exc.message)
        if identity is None:
            metrics.push_handshakes_rejected.labels("invalid_token").inc()
            return error_response(401, "invalid_token", "the connect token is unknown, revoked or expired")
        try:
            limits = (await self._configs.get(identity.app_id)).limits
            most = limits.connections_per_user or self._limits.connections_per_user
            held = await self.node.connect_reads.held(identity.app_id, identity.user_id)
        except Unavailable as exc:
            metrics.push_handshakes_rejected.labels("unavailable").inc()
            return error_response(503, exc.code, exc.message)
        if held >= most:
            metrics.push_handshakes_rejected.labels("too_many_connections").inc()
            message = f"this user already holds {held} connections; at most {most}"
            return error_response(429, "too_many_connections", message)
        metrics.push_handshakes.inc()
        return Admitted(
            identity,
            device_from_request(request.path) or identity.device,
            secret_hash(token),
            limits.frames_per_s or self._limits.frames_per_s,
            checked_at,
        )

    async def _open(self, sock: Socket, request: Request) -> None:
        """The HTTP request: a plain answer, a refusal, or the upgrade and the connection's
        start (welcome, positions, backlog). Frames that arrive meanwhile wait in the inbox."""
        try:
            answer = await self._process_request(request, sock.address)
        except Exception:
            log.exception("could not answer a request for %s", path_only(request.path))
            answer = error_response(500, "internal", "the push node failed to answer this request")
        self._handshake_over(sock)
        if sock.gone:
            return
        if isinstance(answer, Response):
            sock.respond(answer)
            return
        response = sock.protocol.accept(request)
        if response.status_code != 101 or sock.transport is None or sock.transport.is_closing():
            sock.respond(response)
            return
        identity = answer.identity
        reader = Reader(
            sock,
            secrets.token_hex(16),  # a uuid4's 32 hex digits, without building a UUID
            identity.app_id,
            identity.user_id,
            answer.device,
            token_hash=answer.token_hash,
            expires_at=identity.expires_at,
            publish=identity.publish,
        )
        sock.upgrade(response)
        await self._sessions.run(sock, reader, answer.checked_at, answer.frames_per_s)


def _select_subprotocol(_protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    chosen = choose_subprotocol(offered)
    return Subprotocol(chosen) if chosen is not None else None
