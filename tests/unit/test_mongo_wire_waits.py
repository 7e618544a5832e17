"""PyMongo's receive without tasks keeps its contract: the reply, a timeout, the pool's
cancellation, and a cancellation from outside, each as PyMongo's own would end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pymongo
import pytest
from pymongo import network_layer
from pymongo.asynchronous import pool
from pymongo.errors import _OperationCancelled
from pymongo.pool_shared import _CancellationContext

from herald.adapters.store.mongo import wire_waits


class Replying:
    """A connection whose ``read`` answers when ``answer`` is set, or never."""

    def __init__(self, timeout_s: float | None) -> None:
        self.answer: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self.cancel_context = _CancellationContext()
        self.conn = SimpleNamespace(gettimeout=timeout_s, get_conn=self)
        self.reads_cancelled = 0

    async def read(self, request_id: int | None, max_message_size: int) -> tuple[bytes, int]:
        try:
            return await self.answer
        except asyncio.CancelledError:
            self.reads_cancelled += 1
            raise


def op_msg_reply(document: dict[str, Any]) -> tuple[bytes, int]:
    import bson

    return b"\x00\x00\x00\x00" + b"\x00" + bson.encode(document), 2013  # flags, section 0, OP_MSG


async def test_a_reply_is_unpacked_as_pymongo_unpacks_it() -> None:
    conn = Replying(timeout_s=1.0)
    conn.answer.set_result(op_msg_reply({"ok": 1, "n": 3}))

    reply = await wire_waits.receive_message(conn, request_id=None)

    assert reply.unpack_response()[0] == {"ok": 1, "n": 3}


async def test_no_reply_within_the_socket_timeout_is_a_timeout() -> None:
    conn = Replying(timeout_s=0.05)

    with pytest.raises(TimeoutError, match="timed out"):
        await wire_waits.receive_message(conn, request_id=None)
    assert conn.reads_cancelled == 1


async def test_an_operation_the_pool_cancels_ends_within_the_poll_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_layer, "_POLL_TIMEOUT", 0.02)
    conn = Replying(timeout_s=None)
    asyncio.get_running_loop().call_later(0.05, conn.cancel_context.cancel)

    with pytest.raises(_OperationCancelled):
        await asyncio.wait_for(wire_waits.receive_message(conn, request_id=None), 2)


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    conn = Replying(timeout_s=5.0)
    reading = asyncio.ensure_future(wire_waits.receive_message(conn, request_id=None))
    await asyncio.sleep(0.01)

    reading.cancel()

    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_a_send_writes_the_message_in_place() -> None:
    written: list[bytes] = []

    class Protocol:
        async def write(self, message: bytes) -> None:
            written.append(message)

    await wire_waits.sendall(Protocol(), b"op-msg")

    assert written == [b"op-msg"]


def test_install_replaces_pymongos_functions_only_on_a_checked_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "async_receive_message", network_layer.async_receive_message)
    monkeypatch.setattr(pool, "async_sendall", network_layer.async_sendall)
    monkeypatch.setattr(pymongo, "version", "5.0.0")
    assert wire_waits.install() is False
    assert pool.async_receive_message is network_layer.async_receive_message

    monkeypatch.setattr(pymongo, "version", "4.20.1")
    assert wire_waits.install() is True
    assert pool.async_receive_message is wire_waits.receive_message
    assert pool.async_sendall is wire_waits.sendall
