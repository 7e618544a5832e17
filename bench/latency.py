"""POST-to-frame latency of unicast messages against a running Herald.

Sends ``--count`` messages, one at a time or at ``--rate`` per second, to one connected
user; each payload carries its send time, and the latency is taken when its frame
arrives at the client. Prints one JSON line. Loopback only; bounded in count and time.

    python bench/latency.py --auth http://127.0.0.1:8001 --collect http://127.0.0.1:8002 \
        --ws ws://127.0.0.1:8004/ws --api-key hk_... --count 500
    python bench/latency.py --standalone --count 500      # starts `herald dev` itself
    python bench/latency.py --cluster --count 500         # starts auth, collect, dispatch, push
                                                          # as processes on RabbitMQ, Redis, MongoDB-wire
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from herald.client import Operator, Publisher
from herald.settings import generate_secret
from tests.support.cleanup import drop_namespace
from tests.support.procs import HeraldProcess, free_port_block
from tests.support.servers import MongoWire

MAX_SECONDS = 300


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


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
        "p99": round(percentile(latencies, 99), 2),
        "p999": round(percentile(latencies, 99.9), 2),
        "max": round(max(latencies), 2),
        "seconds": round(elapsed, 2),
    }


def run_standalone(count: int, rate: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port_base = 27000 + os.getpid() % 1000 * 5
        env = {**os.environ, "HERALD_DATA_DIR": tmp, "HERALD_LOG_LEVEL": "WARNING"}
        herald = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "dev", "--port-base", str(port_base)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            demo_file = Path(tmp) / "demo-app.json"
            deadline = time.monotonic() + 30
            while not demo_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            api_key = json.loads(demo_file.read_text())["api_key"]
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
        finally:
            herald.terminate()
            herald.wait(timeout=15)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standalone", action="store_true", help="start `herald dev` and measure it")
    parser.add_argument("--cluster", action="store_true", help="start the four services as processes")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--auth")
    parser.add_argument("--collect")
    parser.add_argument("--ws")
    parser.add_argument("--api-key")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = one at a time")
    args = parser.parse_args()
    count = min(args.count, 100_000)
    if args.standalone:
        result = run_standalone(count, args.rate)
    elif args.cluster:
        result = run_cluster(count, args.rate, args.amqp, args.redis)
    else:
        result = asyncio.run(
            asyncio.wait_for(measure(args.auth, args.collect, args.ws, args.api_key, count, args.rate), MAX_SECONDS)
        )
        result["target"] = args.collect
    print(json.dumps(result))


if __name__ == "__main__":
    main()
