"""A push node: writes routed messages to its local sockets, keeps its routes alive, saves acks.

Delivery is synchronous per bus body: each message's frame is encoded once and written
to every local connection of its recipient without awaiting any socket, so one slow
client never delays the others. A client whose unsent output passes ``SEND_BUFFER_LIMIT``
bytes is closed with 4008 and resumes later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import broadcast
from websockets.protocol import State

from herald import codec, metrics
from herald.directory.base import Directory
from herald.errors import Unavailable
from herald.model import parse_channel
from herald.protocol import CLOSE_SLOW_CONSUMER, message_frame
from herald.store.base import Store
from services.push.connections import Connection, LocalConnections

log = logging.getLogger("herald.push")

SEND_BUFFER_LIMIT = 1024 * 1024
ACK_FLUSH_S = 1.0


class PushNode:
    def __init__(self, node_id: str, directory: Directory, store: Store, heartbeat_s: float) -> None:
        self.node_id = node_id
        self.connections = LocalConnections()
        self._directory = directory
        self._store = store
        self._heartbeat_s = heartbeat_s
        self._acks: dict[tuple[str, str], dict[str, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0

    # Bus side ---------------------------------------------------------------
    async def handle(self, body: bytes) -> None:
        """The bus handler for this node's queue."""
        try:
            messages = codec.decode_batch(body)
        except ValueError as exc:
            log.error("dropping an unreadable node body (%d bytes): %s", len(body), exc)
            return
        metrics.push_bus_messages.inc(len(messages))
        self.deliver(messages)

    def deliver(self, messages: Iterable[dict[str, Any]]) -> None:
        for message in messages:
            kind, name = parse_channel(message["channel"])
            if kind != "user":
                continue
            targets = [
                conn
                for conn in self.connections.of_user(message["app"], name)
                if conn.sent.get(message["channel"], 0) < message["offset"]
            ]
            if not targets:
                continue
            broadcast([conn.ws for conn in targets], message_frame(message))
            for conn in targets:
                conn.sent[message["channel"]] = message["offset"]
                self._bound_output(conn)
            self.delivered += len(targets)
            metrics.push_frames_sent.inc(len(targets))

    def _bound_output(self, conn: Connection) -> None:
        transport = conn.ws.transport
        if transport is not None and transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            log.warning("closing a slow consumer", extra={"conn_id": conn.conn_id, "app_id": conn.app_id})
            self._close_soon(conn, CLOSE_SLOW_CONSUMER, "slow consumer: resume later")

    def _close_soon(self, conn: Connection, code: int, reason: str) -> None:
        if conn.ws.protocol.state is State.OPEN:
            task = asyncio.get_running_loop().create_task(conn.ws.close(code, reason))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    # Connection side --------------------------------------------------------
    async def attach(self, conn: Connection, welcome: str) -> None:
        """Greet the connection and route its user here: locally, then in the shared directory.

        The welcome is written in the same step as the local registration, with no await
        between them, so it is always the first frame: any message delivered after it
        follows it on the wire.
        """
        broadcast([conn.ws], welcome)
        self.connections.add(conn)
        metrics.push_connections.set(len(self.connections))
        try:
            await self._directory.add_connections(self.node_id, [conn.presence], self._heartbeat_s * 3)
        except Unavailable:
            # The next heartbeat re-asserts every local connection; until then live
            # messages for this user may miss this node and are recovered on resume.
            log.warning("directory unavailable at connect", extra={"conn_id": conn.conn_id})

    async def detach(self, conn: Connection) -> None:
        if not self.connections.remove(conn):
            return
        metrics.push_connections.set(len(self.connections))
        try:
            await self._directory.remove_connections(self.node_id, [conn.presence])
        except Unavailable:
            log.warning("directory unavailable at disconnect", extra={"conn_id": conn.conn_id})

    def record_ack(self, conn: Connection, channel: str, offset: int) -> None:
        positions = self._acks.setdefault((conn.app_id, conn.user_id), {})
        if offset > positions.get(channel, -1):
            positions[channel] = offset

    async def positions(self, app_id: str, user_id: str) -> dict[str, int]:
        """The user's acknowledged positions, including acks not flushed yet."""
        stored = await self._store.get_cursors(app_id, user_id)
        for channel, offset in self._acks.get((app_id, user_id), {}).items():
            stored[channel] = max(offset, stored.get(channel, 0))
        return stored

    # Node-wide loops --------------------------------------------------------
    async def start(self) -> None:
        await self._directory.refresh_node(self.node_id, [], self._heartbeat_s * 3)
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="push-heartbeat"))
        self._tasks.append(asyncio.create_task(self._ack_loop(), name="push-acks"))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.flush_acks()
        with contextlib.suppress(Unavailable):
            await self._directory.remove_node(self.node_id, self.connections.presences())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._directory.refresh_node(self.node_id, self.connections.presences(), self._heartbeat_s * 3)
            except Unavailable as exc:
                log.warning("heartbeat failed: %s", exc.message)

    async def _ack_loop(self) -> None:
        while True:
            await asyncio.sleep(ACK_FLUSH_S)
            await self.flush_acks()

    async def flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for (app_id, user_id), positions in acks.items():
            try:
                await self._store.save_cursors(app_id, user_id, positions)
            except Unavailable:
                # Keep them for the next flush; a newer ack for the same channel wins.
                for channel, offset in positions.items():
                    kept = self._acks.setdefault((app_id, user_id), {})
                    kept[channel] = max(offset, kept.get(channel, -1))
