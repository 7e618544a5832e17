"""POST-to-frame latency of unicast messages against a running Herald.

Sends ``--count`` messages, one at a time or at ``--rate`` per second, to one connected
user; each payload carries its send time, and the latency is taken when its frame
arrives at the client. Prints one JSON line. Loopback only; bounded in count and time.

    python bench/latency.py --auth http://127.0.0.1:8001 --collect http://127.0.0.1:8002 \
        --ws ws://127.0.0.1:8004/ws --api-key hk_... --count 500
    python bench/latency.py --standalone --count 500      # starts `herald dev` itself
    python bench/latency.py --cluster --count 500         # starts auth, collect, dispatch, push
                                                          # as processes on RabbitMQ, Redis, MongoDB-wire

With ``--concurrent`` it measures the full cluster under load instead: ``--rate`` unicast
messages per second (default 1,000) for ``--seconds`` (default 30), sent open-loop by
``--senders`` concurrent request lanes (a late POST does not delay the ones after it) to
``--users`` connected users round-robin. Each payload carries the sender's CLOCK_MONOTONIC
time and the receiving client process (``bench/wsload.py``) takes the latency when the
frame arrives: POST to frame, p50/p99/p99.9. The POST round trips and how late the lanes
started their sends are reported beside it.

    python bench/latency.py --concurrent --rate 1000 --seconds 30
    python bench/latency.py --concurrent --rate 1000 --seconds 30 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from herald.core.settings import generate_secret
from herald_client import Operator, Publisher
from tests.support.cleanup import drop_namespace
from tests.support.procs import HeraldProcess, free_port_block
from tests.support.servers import MongoWire

MAX_SECONDS = 300


async def measure(auth: str, collect: str, ws_url: str, api_key: str, count: int, rate: float) -> dict:
    user = f"bench-{uuid.uuid4().hex[:8]}"
    latencies: list[float] = []
    async with Publisher(auth, collect, api_key) as publisher:
        token = await publisher.token(user)
        async with connect(f"{ws_url}?token={token}", max_size=None) as ws:
            json.loads(await ws.recv())  # welcome

            arrived = asyncio.Event()

            async def receive() -> None:
                while len(latencies) < count:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "message":
                        latencies.append((time.perf_counter() - frame["data"]["t"]) * 1000)
                        arrived.set()

            receiver = asyncio.create_task(receive())
            for _ in range(5):  # warm-up: connections, caches
                await publisher.send([user + "-warm"], "warm", {"t": 0})
            started = time.perf_counter()
            for n in range(count):
                if rate:
                    delay = started + n / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                arrived.clear()
                await publisher.send([user], "bench", {"t": time.perf_counter(), "n": n})
                if not rate:
                    await asyncio.wait_for(arrived.wait(), 10)
            await asyncio.wait_for(receiver, 30)
            elapsed = time.perf_counter() - started
    return {
        "metric": "unicast_post_to_frame_ms",
        "count": len(latencies),
        "mode": f"{rate}/s" if rate else "sequential",
        "p50": round(statistics.median(latencies), 2),
        "p99": round(common.percentile(latencies, 99), 2),
        "p999": round(common.percentile(latencies, 99.9), 2),
        "max": round(max(latencies), 2),
        "seconds": round(elapsed, 2),
    }


def run_standalone(count: int, rate: float) -> dict:
    with common.scratch("herald-bench-latency-") as workdir, common.herald_dev(workdir) as (_, port_base, api_key):
        base = "http://127.0.0.1"
        result = asyncio.run(
            asyncio.wait_for(
                measure(
                    f"{base}:{port_base + 1}",
                    f"{base}:{port_base + 2}",
                    f"ws://127.0.0.1:{port_base + 4}/ws",
                    api_key,
                    count,
                    rate,
                ),
                MAX_SECONDS,
            )
        )
        result["target"] = "standalone"
        return result


def run_cluster(count: int, rate: float, amqp: str, redis: str) -> dict:
    """The full pipeline as separate processes, one of each service, in a namespace of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        mongo = MongoWire(Path(tmp) / "mongo")
        mongo.start()
        namespace = f"bench_{uuid.uuid4().hex[:8]}"
        base = free_port_block(4)
        ports = {"auth": base + 1, "collect": base + 2, "dispatch": base + 3, "push": base + 4}
        env = {
            "HERALD_NAMESPACE": namespace,
            "HERALD_AMQP_URL": amqp,
            "HERALD_REDIS_URL": redis,
            "HERALD_MONGO_URL": mongo.url,
            "HERALD_ADMIN_TOKEN": generate_secret(),
            "HERALD_SERVICE_TOKEN": generate_secret(),
            "HERALD_AUTH_URL": f"http://127.0.0.1:{ports['auth']}",
            "HERALD_LOG_LEVEL": "WARNING",
        }
        processes = [
            HeraldProcess(role, [role], {**env, "HERALD_PORT": str(port)}, Path(tmp) / f"{role}.log", port)
            for role, port in ports.items()
        ]
        try:
            for process in processes:
                process.start()

            async def go() -> dict:
                async with Operator(f"http://127.0.0.1:{ports['auth']}", env["HERALD_ADMIN_TOKEN"]) as operator:
                    app = await operator.create_app("bench")
                return await measure(
                    f"http://127.0.0.1:{ports['auth']}",
                    f"http://127.0.0.1:{ports['collect']}",
                    f"ws://127.0.0.1:{ports['push']}/ws",
                    app["api_key"],
                    count,
                    rate,
                )

            result = asyncio.run(asyncio.wait_for(go(), MAX_SECONDS))
            result["target"] = "cluster (4 processes, RabbitMQ, Redis, MongoDB-wire)"
            return result
        finally:
            for process in reversed(processes):
                process.stop()
            mongo.stop()
            asyncio.run(drop_namespace(namespace, amqp_url=amqp, redis_url=redis, mongo_url="mongodb://127.0.0.1:1"))


async def send_open_loop(
    port: int, api_key: str, users: list[str], rate: float, seconds: float, senders: int
) -> dict[str, Any]:
    """POST ``rate`` messages a second for ``seconds``, each at its scheduled time by whichever
    of the ``senders`` lanes is free; the payload carries the time just before the POST.

    Bounded in time: a cluster that cannot keep up does not stretch the run; what was not
    sent by ``seconds`` (plus a second's grace) is counted as unsent and the achieved rate
    says so."""
    count = int(rate * seconds)
    indexes = iter(range(count))
    lateness: list[float] = []
    post_ms: list[float] = []
    refused: dict[int, int] = {}
    async with common.RawHttp("127.0.0.1", port, api_key, size=senders) as http:
        # Open the lanes' connections before the clock starts.
        await asyncio.gather(*(http.request("GET", "/healthz") for _ in range(senders)))
        started = time.monotonic() + 0.05
        stop_at = started + seconds + 1.0
        sent_count = 0

        async def lane() -> None:
            nonlocal sent_count
            for n in indexes:
                if time.monotonic() > stop_at:
                    return
                due = started + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.monotonic()
                lateness.append((sent - due) * 1000)
                sent_count += 1
                body = {"to": {"users": [users[n % len(users)]]}, "event": "bench", "data": {"t": sent, "n": n}}
                status, _ = await http.request("POST", "/v1/messages", body)
                post_ms.append((time.monotonic() - sent) * 1000)
                if status != 202:
                    refused[status] = refused.get(status, 0) + 1

        await asyncio.gather(*(lane() for _ in range(senders)))
        elapsed = time.monotonic() - started
    return {
        "sent": sent_count,
        "unsent": count - sent_count,
        "send_seconds": round(elapsed, 2),
        "offered_per_s": rate,
        "achieved_per_s": round(sent_count / elapsed, 1),
        "post_ms": common.summary_ms(post_ms),
        "send_lateness_ms": common.summary_ms(lateness),
        "refused": refused,
    }


@dataclass
class Target:
    """What the concurrent measurement drives: ports, the demo or bench app's key, the pids to meter."""

    name: str
    auth_port: int
    collect_port: int
    push_ports: list[int]
    api_key: str
    pids: dict[str, int]
    profiled: list[str]
    # With --store-commands: the counter and the processes it counts.
    counting: tuple[common.StoreCommands, dict[str, int]] | None = None


@contextlib.contextmanager
def cluster_target(args: argparse.Namespace, workdir: Path) -> Iterator[Target]:
    counting = common.StoreCommands(workdir / "store-commands") if args.store_commands else None
    extra = counting.env() if counting else {}
    with common.Cluster("bench_lat", push=args.nodes, workdir=workdir / "cluster", env_extra=extra) as cluster:
        yield Target(
            f"cluster (auth, collect, dispatch, {args.nodes} push; RabbitMQ, Redis, MongoDB-wire)",
            cluster.ports["auth"],
            cluster.ports["collect"],
            cluster.push_ports,
            cluster.api_key,
            {name: proc.pid for name, proc in cluster.procs.items()},
            ["collect", "dispatch", *cluster.node_ids[:1]],
            (counting, cluster.service_pids()) if counting else None,
        )


@contextlib.contextmanager
def standalone_target(args: argparse.Namespace, workdir: Path) -> Iterator[Target]:
    """`herald dev`: the four services in one process, on SQLite; with ``--servers`` its bus
    and directory are RabbitMQ and Redis (a namespace of its own), else the embedded twins."""
    env: dict[str, str] = {}
    name = "standalone (one process: SQLite, in-process bus and directory)"
    if args.servers:
        env = {
            "HERALD_AMQP_URL": args.amqp,
            "HERALD_REDIS_URL": args.redis,
            "HERALD_NAMESPACE": common.namespace("bench_lat"),
        }
        name = "standalone (one process: SQLite; RabbitMQ, Redis)"
    try:
        with common.herald_dev(workdir, env) as (pid, port_base, api_key):
            yield Target(
                name, port_base + 1, port_base + 2, [port_base + 4], api_key, {"herald-dev": pid}, ["herald-dev"]
            )
    finally:
        if args.servers:
            asyncio.run(
                drop_namespace(
                    env["HERALD_NAMESPACE"], amqp_url=args.amqp, redis_url=args.redis, mongo_url="mongodb://127.0.0.1:1"
                )
            )


def run_concurrent(args: argparse.Namespace) -> list[dict]:
    if args.standalone and args.nodes != 1:
        raise SystemExit("--standalone has one push node")
    if args.standalone and args.store_commands:
        raise SystemExit("--store-commands counts MongoDB commands; `herald dev` here runs on SQLite")
    chosen = standalone_target if args.standalone else cluster_target
    with common.scratch("herald-bench-latency-") as workdir, chosen(args, workdir) as target:
        return measure_concurrent(args, target, workdir)


def connect_users(workers: Any, target: Target, tokens: list[str]) -> int:
    """One connection per token, spread over the target's push nodes; how many opened."""
    nodes = len(target.push_ports)
    sources = common.source_addresses(nodes)
    commands: list[dict | None] = []
    start = 0
    for index, share in enumerate(common.split(len(tokens), nodes)):
        commands.append(
            {
                "cmd": "open",
                "host": "127.0.0.1",
                "port": target.push_ports[index],
                "paths": [f"/ws?token={token}" for token in tokens[start : start + share]],
                "source": sources[index],
                "concurrency": 16,
            }
        )
        start += share
    return sum(answer["ok"] for answer in workers.call(commands) if answer)


def measure_concurrent(args: argparse.Namespace, target: Target, workdir: Path) -> list[dict]:
    from wsload import Workers

    profiler = common.Profiler(args.profile)
    users = [f"l{i}" for i in range(args.users)]
    tokens = asyncio.run(common.mint_tokens(target.auth_port, target.api_key, users, 16))
    workers = Workers(len(target.push_ports), workdir)
    try:
        opened = connect_users(workers, target, tokens)
        common.progress(f"latency: {opened} users connected to {len(target.push_ports)} push node(s)")
        workers.all({"cmd": "stats", "reset": True, "decode": True})
        # Warm-up: connections, caches and queues, outside the measurement.
        asyncio.run(send_open_loop(target.collect_port, target.api_key, users, 200, 1, args.senders))
        time.sleep(1)
        workers.all({"cmd": "stats", "reset": True, "decode": True})
        for role in target.profiled:
            profiler.attach(f"latency-{role}", target.pids[role], args.seconds)
        if target.counting is not None:
            target.counting[0].start(target.counting[1])
        meter = common.CpuMeter(dict(target.pids)).start()
        common.progress(f"latency: {args.rate:.0f} msg/s for {args.seconds:.0f} s, {args.senders} senders")
        sent = asyncio.run(
            send_open_loop(target.collect_port, target.api_key, users, args.rate, args.seconds, args.senders)
        )
        deadline = time.monotonic() + 30
        while True:
            stats = workers.all({"cmd": "stats"})
            if sum(s["frames"] for s in stats) >= sent["sent"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        used = meter.stop()
        counted = (
            {} if target.counting is None else {"store_commands_per_message": target.counting[0].stop(sent["sent"])}
        )
        profiles = profiler.finish(now=True)
        stats = workers.all({"cmd": "stats", "latencies": True})
    finally:
        workers.stop()
    latencies = [x for s in stats for x in s.get("latencies", [])]
    result = {
        "metric": "unicast_post_to_frame_ms",
        "mode": f"concurrent, {args.rate:g}/s offered for {args.seconds:g} s",
        "target": target.name,
        "users": opened,
        "senders": args.senders,
        "received": len(latencies),
        **common.summary_ms(latencies),
        **sent,
        "cpu_s": used,
        "cpu_s_per_1k_messages": {
            k: round(1000 * v / max(1, sent["sent"]), 3) for k, v in used.items() if k != "machine"
        },
        **counted,
    }
    return [result, *profiles]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standalone", action="store_true", help="start `herald dev` and measure it")
    parser.add_argument(
        "--servers", action="store_true", help="--concurrent --standalone: `herald dev` on RabbitMQ and Redis"
    )
    parser.add_argument("--cluster", action="store_true", help="start the four services as processes")
    parser.add_argument(
        "--concurrent", action="store_true", help="the full cluster under --rate msg/s from concurrent senders"
    )
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--auth")
    parser.add_argument("--collect")
    parser.add_argument("--ws")
    parser.add_argument("--api-key")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=None, help="messages per second; 0 = one at a time")
    parser.add_argument("--seconds", type=float, default=30.0, help="--concurrent: how long to send")
    parser.add_argument("--senders", type=int, default=32, help="--concurrent: request lanes")
    parser.add_argument("--users", type=int, default=100, help="--concurrent: connected recipients")
    parser.add_argument("--nodes", type=int, default=1, help="--concurrent: push nodes (users split over them)")
    parser.add_argument("--profile", type=Path, help="--concurrent: py-spy collect, dispatch and push into DIR")
    parser.add_argument(
        "--store-commands",
        action="store_true",
        help="--concurrent: count each service's MongoDB commands and documents per message (bench/hooks)",
    )
    args = parser.parse_args()
    count = min(args.count, 100_000)
    if args.concurrent:
        args.rate = min(args.rate if args.rate else 1000.0, 20_000.0)
        args.seconds = min(args.seconds, 120.0)
        base = {"bench": "latency", **common.machine(), "versions": common.versions()}
        with common.deadline(MAX_SECONDS, "latency benchmark"):
            for result in run_concurrent(args):
                print(json.dumps({**base, **result}), flush=True)
        return
    rate = args.rate or 0.0
    if args.standalone:
        result = run_standalone(count, rate)
    elif args.cluster:
        result = run_cluster(count, rate, args.amqp, args.redis)
    else:
        result = asyncio.run(
            asyncio.wait_for(measure(args.auth, args.collect, args.ws, args.api_key, count, rate), MAX_SECONDS)
        )
        result["target"] = args.collect
    print(json.dumps(result))


if __name__ == "__main__":
    main()
