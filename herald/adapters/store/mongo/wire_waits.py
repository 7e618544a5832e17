"""PyMongo's asyncio send and receive, without three tasks per command.

PyMongo 4's async network layer sends each command through ``asyncio.wait_for`` (a task
around a write that never suspends) and receives each reply by racing two new tasks, the
read and a poll of the connection's cancellation every half second, under
``asyncio.wait``, then cancelling and awaiting the loser. Measured on this machine
against the MongoDB-wire stand-in: 290-390 µs of the client's CPU per command, where one
OP_MSG round trip on a bare asyncio stream costs 42 µs. Every store command of Herald's
hot paths (a group commit's three, a connect batch's three reads) paid it.

``install`` replaces the two functions in PyMongo's async pool with ones that keep their
contract and drop the tasks: the write is awaited in place (it only buffers), and the read
runs in the calling task with two timers, the deadline (socket timeout or CSOT, exactly as
PyMongo computes it) and the cancellation poll (same period); either one cancels the read
and the caller sees ``TimeoutError("timed out")`` or ``_OperationCancelled``, the errors
PyMongo raises there, so the pool closes the connection as before. A cancellation from
outside stays a cancellation. Only PyMongo versions whose internals were checked are
patched (``CHECKED``); another keeps its own functions.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pymongo
from pymongo import _csot, network_layer
from pymongo.errors import ProtocolError, _OperationCancelled
from pymongo.message import _UNPACK_REPLY

# The module whose names are replaced (it imports the two functions by name; typed loosely,
# as it does not export them).
pool: Any = importlib.import_module("pymongo.asynchronous.pool")
# PyMongo releases whose network layer this module was read against.
CHECKED = ("4.20.",)
TIMED_OUT, CANCELLED = "timed out", "cancelled"


async def sendall(conn: Any, buf: bytes) -> None:
    """``network_layer.async_sendall``: ``PyMongoProtocol.write`` never suspends."""
    await conn.write(buf)


class _Watch:
    """Cancels the reading task at its deadline, or once the pool cancels the connection's
    operation (checked every ``_POLL_TIMEOUT``), and remembers which one it was."""

    __slots__ = ("_conn", "_handles", "_poll_s", "_task", "reason")

    def __init__(self, conn: Any, task: asyncio.Task[Any], timeout: float | None, poll_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._conn = conn
        self._task = task
        self._poll_s = poll_s
        self.reason: str | None = None
        self._handles = [loop.call_later(poll_s, self._poll)]
        if timeout is not None:
            self._handles.append(loop.call_later(timeout, self._stop, TIMED_OUT))

    def _poll(self) -> None:
        if self._conn.cancel_context.cancelled:
            self._stop(CANCELLED)
        elif self.reason is None:
            self._handles[0] = asyncio.get_running_loop().call_later(self._poll_s, self._poll)

    def _stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._task.cancel()

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()


async def receive_message(
    conn: Any, request_id: int | None, max_message_size: int = pymongo.common.MAX_MESSAGE_SIZE
) -> Any:
    """``network_layer.async_receive_message``, reading in the calling task."""
    timeout: float | None = conn.conn.gettimeout
    if _csot.get_timeout():
        deadline: float | None = _csot.get_deadline()
    elif timeout:
        deadline = time.monotonic() + timeout
    else:
        deadline = None
    if deadline:
        timeout = max(deadline - time.monotonic(), 0)
    if conn.cancel_context.cancelled:
        raise _OperationCancelled("operation cancelled")
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(conn, task, timeout if deadline else None, network_layer._POLL_TIMEOUT)
    try:
        data, op_code = await conn.conn.get_conn.read(request_id, max_message_size)
    except asyncio.CancelledError:
        if watch.reason is None or task.uncancel() > 0:
            raise  # cancelled from outside
        if watch.reason == TIMED_OUT:
            raise TimeoutError("timed out") from None
        raise _OperationCancelled("operation cancelled") from None
    finally:
        watch.close()
    try:
        unpack_reply = _UNPACK_REPLY[op_code]
    except KeyError:
        raise ProtocolError(f"Got opcode {op_code!r} but expected {_UNPACK_REPLY.keys()!r}") from None
    return unpack_reply(data)


def install() -> bool:
    """Put ``sendall`` and ``receive_message`` in PyMongo's async pool; whether it did."""
    if not pymongo.version.startswith(CHECKED):
        return False
    if pool.async_receive_message not in (network_layer.async_receive_message, receive_message):
        return False  # someone else's replacement: leave it
    pool.async_receive_message = receive_message
    pool.async_sendall = sendall
    return True
