"""The Python CPU of one delivery, without sockets: what is Herald's own in a fan-out.

``bench/fanout.py --spaced`` measures a push node's whole CPU per delivery when messages go
out one at a time: every delivery is then one ``send`` on its own socket, and on loopback
that system call also carries the client's side of TCP and its wake-up. This script takes
the system call away to show what is left above it: N connections whose transports keep
nothing (``write`` returns at once), one group message written to all of them, best of
``--repeat`` rounds.

- Herald: the node's real path, ``DeliveryCore.messages`` (readers of the channel, the
  per-connection sequence check), ``take`` and ``Outlet.carry_out`` (``Socket.write_framed``
  per connection, its buffer bound checked), on real ``Socket`` objects.
- websockets: ``websockets.asyncio.server.broadcast`` over real ``ServerConnection`` objects
  (its protocol builds and serialises the frame for every connection), the baseline of
  ``bench/fanout.py``.

The difference between a fan-out's CPU per delivery and this figure is the system call and
the event loop's share, the same for both servers.

    python bench/delivery_cpu.py                 # 10,000 connections, 30 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

import common
from common import emit
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.protocol import State
from websockets.server import ServerProtocol

from herald.core import codec
from herald.services.push.delivery import DeliveryCore
from herald.services.push.outlet import Outlet
from herald.services.push.readers import Reader
from herald.services.push.socket import Socket

APP = "bench"
GROUP = "g"
DATA = {"text": "x" * 80}  # the 100-byte messages of bench/fanout.py


class Sink:
    """A transport that keeps nothing: the cost above the system call."""

    def write(self, _data: bytes) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default


class Quiet:
    """The node's socket events, unused: the sockets are made open by hand."""

    def accepted(self, _sock: Socket) -> None:
        return None


def timed(rounds: int, connections: int, deliver: Any) -> list[float]:
    """Microseconds per delivery of each round (``deliver(round)`` writes to every connection)."""
    gc.collect()
    gc.disable()
    try:
        per_delivery = []
        for round_ in range(rounds):
            started = time.perf_counter()
            deliver(round_ + 1)
            per_delivery.append((time.perf_counter() - started) / connections * 1e6)
        return per_delivery
    finally:
        gc.enable()


def herald_path(connections: int, rounds: int) -> list[float]:
    now = time.time()
    core = DeliveryCore()
    outlet = Outlet(core, None, None, None, lambda work, _name: work.close(), lambda: None)  # type: ignore[arg-type]
    for index in range(connections):
        sock = Socket(Quiet(), 1 << 20, lambda _protocol, _offered: None)  # type: ignore[arg-type]
        sock.transport = Sink()  # type: ignore[assignment]
        sock.protocol.state = State.OPEN
        reader = Reader(sink=sock, conn_id=f"c{index}", app_id=APP, user_id=f"u{index}", device=None)
        core.add(reader, now, now)
        core.load_groups(reader, {GROUP: 0})
        core.start(reader, {}, {f"group:{GROUP}": 0}, now)
    core.take()

    def deliver(offset: int) -> None:
        message = {
            "id": f"m{offset}",
            "app": APP,
            "channel": f"group:{GROUP}",
            "offset": offset,
            "event": "bench",
            "data": DATA,
            "ts": int(now * 1000),
        }
        core.messages([message], now)
        outlet.carry_out(core.take())

    return timed(rounds, connections, deliver)


async def broadcast_path(connections: int, rounds: int) -> list[float]:
    sink = Sink()
    opened = []
    for _ in range(connections):
        connection = ServerConnection(ServerProtocol(), None, ping_interval=None)  # type: ignore[arg-type]
        connection.transport = sink  # type: ignore[assignment]
        connection.protocol.state = State.OPEN
        opened.append(connection)
    frame = codec.dumps({"type": "message", "channel": f"group:{GROUP}", "event": "bench", "data": DATA}).decode()
    return timed(rounds, connections, lambda _offset: broadcast(opened, frame))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30, help="rounds (one message to every connection each)")
    args = parser.parse_args()
    base = {"bench": "delivery_cpu", **common.machine(), "versions": common.versions()}
    herald = herald_path(args.connections, args.repeat)
    bare = asyncio.run(broadcast_path(args.connections, args.repeat))
    figures = {}
    for name, rounds in (("herald", herald), ("websockets_broadcast", bare)):
        figures[name] = {"best_us": round(min(rounds), 3), "median_us": round(statistics.median(rounds), 3)}
    emit(
        {
            **base,
            "metric": "python_cpu_per_delivery_us",
            "connections": args.connections,
            "rounds": args.repeat,
            **figures,
            "herald_over_broadcast": round(
                figures["herald"]["median_us"] / figures["websockets_broadcast"]["median_us"], 2
            ),
        }
    )


if __name__ == "__main__":
    main()
