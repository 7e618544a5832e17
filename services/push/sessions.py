"""An upgraded connection's life on the push node: its start, its frames, its end.

Start: into the node (core and directory), the welcome with each channel's position,
the client's ``resume`` if it comes within ``RESUME_WAIT_S``, then the backlog. Frames
are answered from the socket's callbacks without a task; only work that must await (the
start, a publish, a token refresh) runs as one, and frames arriving meanwhile wait in the
socket's inbox, in order. A clean close is answered once the connection's acks are
written (``PushNode.persist_acks``); the connection leaves the node when its TCP
connection is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from herald.core.credentials import secret_hash
from herald.core.errors import Unavailable
from herald.core.waiting import wait_within
from herald.ops import metrics
from herald.services.push.handshake import Identity
from herald.services.push.node import PushNode
from herald.services.push.protocol import (
    CLOSE_TRY_LATER,
    PONG_FRAME,
    Ack,
    ClientFrame,
    FrameError,
    Ping,
    Publish,
    Refresh,
    Resume,
    error_frame,
    parse_client_frame,
    reply_error_frame,
    welcome_frame,
)
from herald.services.push.publish import ClientPublishing
from herald.services.push.readers import Reader
from herald.services.push.screen import TokenScreen
from herald.services.push.socket import Socket

log = logging.getLogger("herald.push")

# Frames a busy connection (starting, or awaiting a publish) may queue before its reads pause.
MAX_INBOX = 64
# How long a new connection may take to send ``resume`` before its backlog starts at the
# stored cursors. Clients that resume send it first thing, so they never wait.
RESUME_WAIT_S = 0.25


@dataclass(slots=True)
class FrameBudget:
    """Token bucket on the frames a client sends: a flood gets error frames, not our CPU."""

    rate_per_s: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    warned_at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    @property
    def burst(self) -> float:
        return max(1.0, self.rate_per_s * 2)

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """End a connection's wait for its first frame: a frame came, or it is lost."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _count_error(code: str) -> None:
    metrics.errors.labels("push", code).inc()


class Sessions:
    def __init__(self, node: PushNode, checker: TokenScreen, publishing: ClientPublishing, heartbeat_s: float) -> None:
        self._node = node
        self._checker = checker
        self._publishing = publishing
        self._heartbeat_s = heartbeat_s
        self._tasks: set[asyncio.Task[None]] = set()  # each removed when done

    async def run(self, sock: Socket, reader: Reader, checked_at: float, frames_per_s: float) -> None:
        """The connection just upgraded: start it, then answer the frames that waited."""
        sock.conn = reader
        sock.inbox = []
        sock.budget = FrameBudget(frames_per_s)
        try:
            await self._start(sock, reader, checked_at)
            await self._drain(sock, reader)
        except Exception:
            log.exception("a connection failed to start", extra={"conn_id": reader.conn_id})
            await sock.close(1011, "internal error")
        finally:
            sock.uncork()  # the 101 goes out with the welcome, or here on any other way out
            self._settle(sock, reader)

    async def _start(self, sock: Socket, reader: Reader, checked_at: float) -> None:
        node = self._node
        if not await node.attach(reader, checked_at):
            return  # refused (revoked, expired meanwhile): the node closes it
        try:
            positions, heads = await node.load(reader)
        except Unavailable:
            await sock.close(CLOSE_TRY_LATER, "store unavailable, reconnect later")
            return
        if not sock.send_text(welcome_frame(reader.conn_id, reader.user_id, self._heartbeat_s, positions)):
            return
        first = await self._first_frame(sock)
        frame = self._parse(first) if first is not None else None
        if isinstance(frame, Resume):
            positions.update(node.core.readable(reader, frame.positions))
        node.begin(reader, positions, heads)
        if first is not None and not isinstance(frame, Resume):
            await self._answer(sock, reader, first)

    async def _first_frame(self, sock: Socket) -> str | bytes | None:
        """The client's first frame if it comes within ``RESUME_WAIT_S``: a ``resume`` there
        sets where the backlog starts; otherwise it starts at the stored cursors."""
        assert sock.inbox is not None
        if not sock.inbox and sock.open:
            waiter = sock.waiter = asyncio.get_running_loop().create_future()
            try:
                await wait_within(waiter, RESUME_WAIT_S)
            finally:
                sock.waiter = None
        return sock.inbox.pop(0) if sock.inbox else None

    # Socket events -------------------------------------------------------------------

    def message(self, sock: Socket, data: str | bytes) -> None:
        reader: Reader | None = sock.conn
        if reader is None:
            return
        if sock.inbox is not None:
            # Busy: still starting, or awaiting a publish or refresh. Frames keep their order.
            sock.inbox.append(data)
            _wake(sock.waiter)
            if len(sock.inbox) >= MAX_INBOX and sock.transport is not None:
                sock.transport.pause_reading()
            return
        work = self._reply(sock, reader, data)
        if work is not None:
            sock.inbox = []
            self._spawn(self._finish(sock, reader, work))

    def closing(self, sock: Socket) -> bool:
        """The client closed cleanly: answer once its acks are written (see ``Socket.release``).
        Acks still waiting in the inbox (sent during a publish) count too."""
        reader: Reader | None = sock.conn
        if reader is None or not reader.started:
            return False
        for raw in sock.inbox or ():
            frame = self._parse(raw)
            if isinstance(frame, Ack):
                self._node.core.ack(reader, frame.channel, frame.offset)
        if not reader.acked:
            self._node.core.closing(reader)
            return False
        self._spawn(self._persist_then_release(sock, reader))
        return True

    async def _persist_then_release(self, sock: Socket, reader: Reader) -> None:
        try:
            await self._node.persist_acks(reader)
        finally:
            sock.release()

    def lost(self, sock: Socket) -> None:
        reader: Reader | None = sock.conn
        if reader is None:
            return
        _wake(sock.waiter)
        if sock.inbox is None:
            self._end(sock, reader)
        # Otherwise the task working for the connection ends it when it settles.

    # Frames --------------------------------------------------------------------------

    async def _finish(self, sock: Socket, reader: Reader, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
            await self._drain(sock, reader)
        finally:
            self._settle(sock, reader)

    async def _drain(self, sock: Socket, reader: Reader) -> None:
        """Answer the frames that waited, in order, awaiting what must be awaited."""
        inbox = sock.inbox
        assert inbox is not None
        while inbox and sock.open:
            await self._answer(sock, reader, inbox.pop(0))

    def _settle(self, sock: Socket, reader: Reader) -> None:
        """Back to answering frames as they come; the connection ends here if it was lost
        while this task worked for it (``lost`` leaves that to us)."""
        sock.inbox = None
        if sock.transport is not None and not sock.transport.is_reading() and sock.open:
            sock.transport.resume_reading()
        if sock.gone:
            self._end(sock, reader)

    def _end(self, sock: Socket, reader: Reader) -> None:
        sock.conn = None  # no cycle left between the socket and its reader
        self._spawn(self._node.detach(reader))

    async def _answer(self, sock: Socket, reader: Reader, raw: str | bytes) -> None:
        work = self._reply(sock, reader, raw)
        if work is not None:
            await work

    @staticmethod
    def _parse(raw: str | bytes) -> ClientFrame | FrameError:
        try:
            return parse_client_frame(raw)
        except FrameError as exc:
            return exc

    def _reply(self, sock: Socket, reader: Reader, raw: str | bytes) -> Coroutine[Any, Any, None] | None:
        """Answer one client frame. Everything is answered at once except a publish and a
        refresh, which need other services: they come back as work to await, and the frames
        after them wait their turn."""
        now = time.monotonic()
        frame = self._parse(raw)
        budget: FrameBudget = sock.budget
        if not budget.take(now):
            _count_error("rate_limited")
            message = f"more than {budget.rate_per_s:g} frames per second; frames are being dropped"
            if isinstance(frame, Publish):
                sock.send_text(reply_error_frame(frame.seq, "rate_limited", message))
            elif now - budget.warned_at >= 1.0:
                # At most one error frame a second: a flood must not make us send a flood.
                budget.warned_at = now
                sock.send_text(error_frame("rate_limited", message))
            return None
        node = self._node
        if isinstance(frame, FrameError):
            _count_error(frame.code)
            if frame.seq is not None:
                sock.send_text(reply_error_frame(frame.seq, frame.code, frame.message))
            else:
                sock.send_text(error_frame(frame.code, frame.message))
        elif isinstance(frame, Publish):
            return self._publish(sock, reader, frame)
        elif isinstance(frame, Refresh):
            return self._refresh(reader, frame)
        elif isinstance(frame, Ping):
            sock.send_text(PONG_FRAME)
        elif isinstance(frame, Ack):
            node.core.ack(reader, frame.channel, frame.offset)
            node.soon()
        elif isinstance(frame, Resume):
            node.core.resume(reader, frame.positions, time.time())
            node.soon()
        return None

    async def _publish(self, sock: Socket, reader: Reader, frame: Publish) -> None:
        sock.send_text(await self._publishing.reply(reader, frame))

    async def _refresh(self, reader: Reader, frame: Refresh) -> None:
        checked_at = time.time()
        identity: Identity | None
        try:
            identity = await self._checker.identity(frame.token)
        except Unavailable:
            _count_error("auth_unavailable")
            if reader.sink is not None:
                reader.sink.send_text(error_frame("auth_unavailable", "auth did not answer; try the refresh again"))
            return
        self._node.core.refresh(reader, identity, secret_hash(frame.token), checked_at, time.time())
        self._node.soon()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
