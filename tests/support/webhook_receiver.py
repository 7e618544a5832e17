"""A scriptable HTTP endpoint on the loopback for webhook tests: it answers with the statuses
it was given in turn and keeps every request it received."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from herald.ops import metrics

WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP endpoint answering with the scripted statuses in turn, then ``then``."""

    def __init__(self, script: list[int] | None = None, then: int = 200, delays_s: list[float] | None = None) -> None:
        self.script = list(script or [])
        self.then = then
        self.delays_s = list(delays_s or [])
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/herald?token=t"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), WAIT_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Received(method, target, headers, body))
                if self.delays_s:
                    await asyncio.sleep(self.delays_s.pop(0))
                status = self.script.pop(0) if self.script else self.then
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def outcome_counts() -> dict[str, float]:
    """This process's webhook outcomes so far, from the Prometheus counter."""
    text = metrics.exposition()[0].decode()
    return {
        outcome: metrics.sample(text, "herald_webhooks_total", f'outcome="{outcome}"')
        for outcome in ("delivered", "retried", "failed", "dropped")
    }


def outcome_changes(before: dict[str, float]) -> dict[str, float]:
    """The outcomes that moved since ``before`` (an ``outcome_counts()``), and by how much."""
    after = outcome_counts()
    return {outcome: after[outcome] - before[outcome] for outcome in after if after[outcome] != before[outcome]}
