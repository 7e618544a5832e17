"""A response's writes of one loop turn leave in one write, in order, and none is lost on close."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn

from herald.web.coalesced import FLUSH_AT, CoalescedHttpToolsProtocol, CoalescedTransport
from tests.support.servers import free_port


class Recording:
    """A transport that records what it is asked to write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def coalesced(recording: Recording) -> CoalescedTransport:
    return CoalescedTransport(recording, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_the_writes_of_one_turn_leave_in_one_write_in_order() -> None:
    recording = Recording()
    transport = coalesced(recording)

    transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    transport.write(b"{}")
    assert recording.writes == []
    await asyncio.sleep(0)

    assert recording.writes == [b"HTTP/1.1 202 Accepted\r\n\r\n{}"]


async def test_closing_sends_what_was_kept_first() -> None:
    recording = Recording()
    transport = coalesced(recording)

    transport.write(b"bye")
    transport.close()

    assert recording.writes == [b"bye"] and recording.closed
    await asyncio.sleep(0)
    assert recording.writes == [b"bye"], "the scheduled send finds nothing left"


async def test_what_is_kept_counts_in_the_write_buffer_and_the_rest_is_the_transport_s() -> None:
    transport = coalesced(Recording())

    transport.write(b"12345")

    assert transport.get_write_buffer_size() == 5
    assert transport.get_extra_info("peername") == "extra:peername"


async def test_a_server_on_the_coalesced_protocol_answers_keep_alive_requests_whole() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=CoalescedHttpToolsProtocol, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            bodies = [f"request {n}".encode() * (1 + n * 500) for n in range(20)]
            answers = [await client.post("/", content=body) for body in bodies]
        assert [answer.content for answer in answers] == bodies
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_large_body_goes_to_the_transport_at_once_where_its_flow_control_can_see_it() -> None:
    recording = Recording()
    transport = coalesced(recording)

    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"x" * FLUSH_AT)

    assert recording.writes == [b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * FLUSH_AT]
    assert transport.get_write_buffer_size() == 0
