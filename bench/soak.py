"""Soak: connection churn with resume, unicast and group traffic, for a long time; does
memory stay flat?

A cluster of processes (auth, collect, dispatch, two push nodes on RabbitMQ, Redis and the
MongoDB-wire stand-in, in a namespace of its own) serves ``--users`` users. Each user keeps
one connection, to a push node picked at random, and replaces it every ``--churn-min`` to
``--churn-max`` seconds (mostly a clean close, one in five cut abruptly), sending `resume`
with the highest offset it handled per channel. Meanwhile ``--rate`` unicast messages per
second go to random users and ``--group-rate`` per second to a group of ``--group-size``
members, through collect's ``POST /v1/messages``.

Every message is counted at the clients, by the number its payload carries: a message
accepted (202) and never handled is *lost*; one handled twice (at a higher offset than the
first time) is *duplicated*; frames at or below the handled offset (the protocol's allowed
redelivery after a resume) are counted apart as *redelivered*. Each process's resident
memory (``/proc/<pid>/status`` VmRSS) is sampled every ``--sample-s`` seconds and the
result gives, per process, the RSS at the start and the end and the least-squares slope
over the second half of the run, in MB per 10 minutes (the store, ``mongo``, grows with
its data and is reported apart).

    python bench/soak.py --minutes 30 --users 200 --rate 100 --group-rate 3
    python bench/soak.py --minutes 3                       # the short form scripts/bench runs
    python bench/soak.py --minutes 10 --tracemalloc /tmp/snaps   # services dump tracemalloc
                                                                 # snapshots (bench/memtrace.py)

Loopback only; bounded in time (the run, then at most ``--drain-s`` for the last messages).
One JSON line on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

GROUP = "soak"
ACK_EVERY_S = 1.0
PROGRESS_S = 30.0
MB = 1024.0


# Clients ------------------------------------------------------------------------------------
@dataclass
class User:
    """One user's view: the highest offset handled per channel and the message numbers handled."""

    name: str
    token: str
    positions: dict[str, int] = field(default_factory=dict)
    handled: set[int] = field(default_factory=set)
    expected: set[int] = field(default_factory=set)
    duplicated: int = 0
    redelivered: int = 0
    gaps: int = 0
    connects: int = 0
    failed_connects: int = 0


@dataclass
class Churn:
    """Runs every user's connection loop until ``stop`` (churning while ``churning``)."""

    users: list[User]
    ws_urls: list[str]
    churn_s: tuple[float, float]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    churning: bool = True
    errors: dict[str, int] = field(default_factory=dict)

    async def run(self) -> None:
        await asyncio.gather(*(self._user_loop(user) for user in self.users))

    async def _user_loop(self, user: User) -> None:
        # Spread the first connections over three seconds, not all at once.
        await asyncio.sleep(3 * random.random())
        while not self.stop.is_set():
            lifetime = random.uniform(*self.churn_s) if self.churning else None
            try:
                await self._one_connection(user, lifetime)
            except (TimeoutError, OSError, WebSocketException) as exc:
                user.failed_connects += 1
                name = type(exc).__name__
                if isinstance(exc, ConnectionClosed):
                    name += f" {exc.rcvd.code if exc.rcvd else 'without a close frame'}"
                self.errors[name] = self.errors.get(name, 0) + 1
                await asyncio.sleep(0.5 + random.random())

    async def _one_connection(self, user: User, lifetime: float | None) -> None:
        url = f"{random.choice(self.ws_urls)}?token={user.token}"
        async with asyncio.timeout(10):
            ws = await connect(url, max_size=None, open_timeout=10, close_timeout=2)
        try:
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if welcome.get("type") != "welcome":
                raise WebSocketException(f"expected a welcome, got {welcome}")
            user.connects += 1
            if user.positions:
                await ws.send(orjson.dumps({"type": "resume", "positions": user.positions}).decode())
            sent_here: dict[str, int] = {}
            acked: dict[str, int] = {}
            ends_at = time.monotonic() + lifetime if lifetime is not None else None
            next_ack = time.monotonic() + ACK_EVERY_S
            while not self.stop.is_set():
                now = time.monotonic()
                if ends_at is not None and now >= ends_at:
                    break
                if not self.churning and ends_at is not None:
                    break  # churn stopped: the next connection stays
                timeout = min(next_ack, ends_at if ends_at is not None else next_ack + 1) - now
                try:
                    raw = await asyncio.wait_for(ws.recv(), max(0.01, timeout))
                except TimeoutError:
                    raw = None
                if raw is not None:
                    self._handle(user, orjson.loads(raw), sent_here)
                if time.monotonic() >= next_ack:
                    next_ack = time.monotonic() + ACK_EVERY_S
                    for channel, offset in sent_here.items():
                        if acked.get(channel) != offset:
                            acked[channel] = offset
                            await ws.send(orjson.dumps({"type": "ack", "channel": channel, "offset": offset}).decode())
        finally:
            if random.random() < 0.2 and ws.transport is not None:
                ws.transport.abort()  # an abrupt end: no close handshake, acks may be unstored
            else:
                with contextlib.suppress(Exception):
                    await ws.close()

    def _handle(self, user: User, frame: dict[str, Any], sent_here: dict[str, int]) -> None:
        kind = frame.get("type")
        if kind == "error":
            code = f"error:{frame.get('code')}"
            self.errors[code] = self.errors.get(code, 0) + 1
            return
        if kind != "message":
            return
        channel, offset = frame["channel"], frame["offset"]
        sent_here[channel] = max(sent_here.get(channel, 0), offset)
        handled = user.positions.get(channel)
        if handled is not None and offset <= handled:
            user.redelivered += 1
            return
        if handled is not None and offset != handled + 1:
            user.gaps += 1
        user.positions[channel] = offset
        number = frame["data"]["n"]
        if number in user.handled:
            user.duplicated += 1
        user.handled.add(number)


# Traffic ------------------------------------------------------------------------------------
@dataclass
class Traffic:
    """Open-loop senders of unicast and group messages; what collect accepted is expected."""

    port: int
    api_key: str
    users: list[User]
    members: list[User]
    refused: dict[int, int] = field(default_factory=dict)
    sent_unicast: int = 0
    sent_group: int = 0
    _number: int = 0

    async def run(self, rate: float, group_rate: float, seconds: float, lanes: int = 32) -> None:
        async with common.RawHttp("127.0.0.1", self.port, self.api_key, size=lanes + 2) as http:
            await asyncio.gather(
                self._lane_set(http, rate, seconds, lanes, self._unicast),
                self._lane_set(http, group_rate, seconds, 1, self._group),
            )

    async def _lane_set(self, http: common.RawHttp, rate: float, seconds: float, lanes: int, send: Any) -> None:
        if rate <= 0:
            return
        started = time.monotonic()
        count = int(rate * seconds)
        indexes = iter(range(count))

        async def lane() -> None:
            for index in indexes:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() > started + seconds + 5:
                    return  # far behind: the run is bounded in time
                await send(http)

        await asyncio.gather(*(lane() for _ in range(lanes)))

    def _next(self) -> int:
        self._number += 1
        return self._number

    async def _post(self, http: common.RawHttp, to: dict[str, Any], number: int) -> bool:
        try:
            status, _ = await http.request("POST", "/v1/messages", {"to": to, "event": "soak", "data": {"n": number}})
        except (TimeoutError, OSError, ConnectionError):
            status = 0
        if status != 202:
            self.refused[status] = self.refused.get(status, 0) + 1
        return status == 202

    async def _unicast(self, http: common.RawHttp) -> None:
        user, number = random.choice(self.users), self._next()
        user.expected.add(number)  # before the POST: its frame may come before the 202
        if await self._post(http, {"users": [user.name]}, number):
            self.sent_unicast += 1
        else:
            user.expected.discard(number)

    async def _group(self, http: common.RawHttp) -> None:
        number = self._next()
        for member in self.members:
            member.expected.add(number)
        if await self._post(http, {"group": GROUP}, number):
            self.sent_group += 1
        else:
            for member in self.members:
                member.expected.discard(number)


# Memory -------------------------------------------------------------------------------------
@dataclass
class RssSampler:
    """VmRSS of each process every ``every_s`` seconds: (seconds since start, MiB)."""

    pids: dict[str, int]
    every_s: float
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        while not stop.is_set():
            now = time.monotonic() - started
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, RuntimeError):
                    self.samples.setdefault(name, []).append((now, common.rss_kb(pid) / MB))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)

    def report(self, since_s: float) -> dict[str, dict[str, Any]]:
        out = {}
        for name, points in self.samples.items():
            tail = [(t, v) for t, v in points if t >= since_s]
            out[name] = {
                "start_mb": round(points[0][1], 1),
                "warm_mb": round(tail[0][1], 1) if tail else None,
                "end_mb": round(points[-1][1], 1),
                "max_mb": round(max(v for _, v in points), 1),
                "slope_mb_per_10min": round(slope(tail) * 600, 3) if len(tail) >= 3 else None,
                "samples": len(points),
            }
        return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, v) points, v per second."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


# The run ------------------------------------------------------------------------------------
async def soak(cluster: common.Cluster, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"s{i}" for i in range(args.users)]
    tokens = await common.mint_tokens(cluster.ports["auth"], cluster.api_key, names, 16)
    users = [User(name, token) for name, token in zip(names, tokens, strict=True)]
    members = users[: args.group_size]
    await common.join_group(cluster.ports["collect"], cluster.api_key, GROUP, [m.name for m in members], 8)

    churn = Churn(users, cluster.ws_urls, (args.churn_min, args.churn_max))
    clients = asyncio.create_task(churn.run())
    await asyncio.sleep(5)  # everyone connected once before the clock starts
    pids = {name: proc.pid for name, proc in cluster.procs.items()}
    sampler = RssSampler(pids, args.sample_s)
    sampling_stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(sampling_stop))
    traffic = Traffic(cluster.ports["collect"], cluster.api_key, users, members)
    seconds = args.minutes * 60
    common.progress(
        f"soak: {args.users} users churning every {args.churn_min:g}-{args.churn_max:g} s, "
        f"{args.rate:g} unicast/s, {args.group_rate:g} group msg/s to {len(members)} members, "
        f"{args.minutes:g} min"
    )
    reporter = asyncio.create_task(_report_progress(sampler, users, traffic, seconds))
    started = time.monotonic()
    await traffic.run(args.rate, args.group_rate, seconds)
    sampling_stop.set()
    await sampling
    reporter.cancel()
    elapsed = time.monotonic() - started

    # Churn stops; every user's next connection stays until everything expected arrived.
    churn.churning = False
    drain_started = time.monotonic()
    while time.monotonic() - drain_started < args.drain_s:
        if all(u.expected <= u.handled for u in users):
            break
        await asyncio.sleep(0.5)
    drained_s = time.monotonic() - drain_started
    churn.stop.set()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(clients, 15)

    expected = sum(len(u.expected) for u in users)
    lost = sum(len(u.expected - u.handled) for u in users)
    unexpected = sum(len(u.handled - u.expected) for u in users)
    processes = sampler.report(since_s=elapsed / 2)
    store = processes.pop("mongo", None)
    return {
        "metric": "soak",
        "minutes": round(elapsed / 60, 1),
        "users": args.users,
        "churn_s": [args.churn_min, args.churn_max],
        "unicast_per_s": args.rate,
        "group_per_s": args.group_rate,
        "group_members": len(members),
        "sent_unicast": traffic.sent_unicast,
        "sent_group": traffic.sent_group,
        "refused": traffic.refused,
        "deliveries_expected": expected,
        "deliveries_handled": expected - lost,
        "lost": lost,
        "duplicated": sum(u.duplicated for u in users),
        "unexpected": unexpected,
        "redelivered": sum(u.redelivered for u in users),
        "gaps": sum(u.gaps for u in users),
        "connects": sum(u.connects for u in users),
        "failed_connects": sum(u.failed_connects for u in users),
        "client_errors": churn.errors,
        "drain_s": round(drained_s, 1),
        "rss": processes,
        "rss_store": store,
        "max_slope_mb_per_10min": max(
            (p["slope_mb_per_10min"] for p in processes.values() if p["slope_mb_per_10min"] is not None), default=None
        ),
    }


async def _report_progress(sampler: RssSampler, users: list[User], traffic: Traffic, seconds: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_S)
        rss = {name: round(points[-1][1], 1) for name, points in sampler.samples.items() if points}
        common.progress(
            f"soak: {time.monotonic() - started:.0f}/{seconds:.0f} s, sent {traffic.sent_unicast}+"
            f"{traffic.sent_group} group, connects {sum(u.connects for u in users)} "
            f"(failed {sum(u.failed_connects for u in users)}), refused {traffic.refused}, RSS MiB {rss}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long traffic and churn run")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="unicast messages per second")
    parser.add_argument("--group-rate", type=float, default=3.0, help="group messages per second")
    parser.add_argument("--group-size", type=int, default=50)
    parser.add_argument("--churn-min", type=float, default=5.0, help="shortest connection lifetime, seconds")
    parser.add_argument("--churn-max", type=float, default=15.0, help="longest connection lifetime, seconds")
    parser.add_argument("--sample-s", type=float, default=15.0, help="RSS sampling interval")
    parser.add_argument("--drain-s", type=float, default=90.0, help="at most this long for the last messages")
    parser.add_argument("--tracemalloc", type=Path, help="services write tracemalloc snapshots into DIR")
    parser.add_argument("--tracemalloc-s", type=float, default=60.0, help="interval of those snapshots")
    args = parser.parse_args()
    args.minutes = min(max(args.minutes, 1.0), 180.0)
    args.users = min(max(args.users, 2), 5000)
    args.group_size = min(args.group_size, args.users)
    args.rate = min(args.rate, 2000.0)
    args.group_rate = min(args.group_rate, 100.0)
    env = {"HERALD_TOKEN_TTL_S": str(int(args.minutes * 60 + 3600)), "HERALD_MAX_CONNECTIONS_PER_USER": "10"}
    if args.tracemalloc:
        args.tracemalloc.mkdir(parents=True, exist_ok=True)
        env["HERALD_TRACEMALLOC"] = str(args.tracemalloc.resolve())
        env["HERALD_TRACEMALLOC_S"] = str(args.tracemalloc_s)
    base = {"bench": "soak", **common.machine(), "versions": common.versions()}
    bound_s = args.minutes * 60 + args.drain_s + 300
    with (
        common.deadline(bound_s, "soak benchmark"),
        common.scratch("herald-bench-soak-") as workdir,
        common.Cluster("bench_soak", push=2, env_extra=env, workdir=workdir / "cluster") as cluster,
    ):
        result = asyncio.run(soak(cluster, args))
    print(json.dumps({**base, **result}), flush=True)


if __name__ == "__main__":
    main()
