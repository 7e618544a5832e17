"""The AMQP connection's writer: what one loop turn writes leaves in one call, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from yarl import URL

from herald.adapters.bus.amqp.corked import CorkedTransportFactory, CorkedWriter


class RecordingTransport(asyncio.WriteTransport):
    """Records each call that would be a system call on a real socket."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[bytes]] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.calls.append([bytes(data)])

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append([bytes(chunk) for chunk in list_of_data])

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def corked_writer() -> tuple[CorkedWriter, RecordingTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return CorkedWriter(transport, protocol, reader, loop), transport


async def test_the_writes_of_one_loop_turn_leave_in_one_call_in_their_order() -> None:
    writer, transport = corked_writer()

    writer.write(b"ack-1")
    writer.write(b"ack-2")
    writer.writelines([b"publish-", b"3"])
    assert transport.calls == []
    await asyncio.sleep(0)

    assert transport.calls == [[b"ack-1", b"ack-2", b"publish-", b"3"]]


async def test_a_lone_write_leaves_as_a_plain_write_on_the_next_turn() -> None:
    writer, transport = corked_writer()

    writer.write(b"heartbeat")
    await asyncio.sleep(0)
    writer.write(b"next")
    await asyncio.sleep(0)

    assert transport.calls == [[b"heartbeat"], [b"next"]]


async def test_frames_that_wait_for_their_write_still_leave_together() -> None:
    writer, transport = corked_writer()

    for ack in (b"ack-1", b"ack-2", b"ack-3"):
        writer.write(ack)
        await writer.drain()  # aiormq drains after each frame an ack or a publish waits for
    assert transport.calls == []
    await asyncio.sleep(0)

    assert transport.calls == [[b"ack-1", b"ack-2", b"ack-3"]]


async def test_close_sends_what_was_kept_before_closing() -> None:
    writer, transport = corked_writer()

    writer.write(b"connection.close")
    writer.close()

    assert transport.calls == [[b"connection.close"]]
    assert transport.closed


async def test_nothing_is_written_to_a_transport_already_closing() -> None:
    writer, transport = corked_writer()

    writer.write(b"late")
    transport.closed = True
    await asyncio.sleep(0)

    assert transport.calls == []


async def test_a_refused_connection_is_an_amqp_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()

    try:
        await CorkedTransportFactory().create(URL(f"amqp://127.0.0.1:{port}/"))
    except aio_pika.exceptions.AMQPConnectionError:
        return
    raise AssertionError("connecting to a closed port succeeded")
