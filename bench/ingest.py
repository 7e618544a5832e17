"""Ingest: messages per second one collect process accepts, with persistence.

Starts auth (for the app and its key) and one collect process on RabbitMQ, Redis and the
MongoDB-wire stand-in; no dispatch or push: what is measured is the accept path alone
(validate, allocate offsets, insert into the store, publish to the bus with confirms,
202). Each phase runs for ``--seconds`` with requests in flight from this process (a lean
keep-alive HTTP client, ``common.RawHttp``), every message 100 bytes of ``data``:

- ``single``: one message per ``POST /v1/messages``, ``--concurrency`` requests in flight,
  each to the next of ``--users`` users;
- ``batch``: ``POST /v1/messages/batch`` with ``--batch`` messages, ``--batch-concurrency``
  in flight, each message to another user (a batch touches ``--batch`` channels);
- ``batch, one channel``: the same batches, all to one user (one offset counter per batch).

Accepted messages per second counts 202 results only; CPU of collect and of the store
server over the phase is reported per message.

Then, unless ``--no-baseline``, the ``single`` phase's requests against the floor
(``bench/http_floor_server.py``): uvicorn as Herald runs it, answering every request with
a 202 without reading it. Its CPU per request is what the HTTP server alone costs.

    python bench/ingest.py
    python bench/ingest.py --seconds 5 --profile /tmp/prof
    python bench/ingest.py --phases single --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import common
import orjson
from common import Cluster, CpuMeter, Proc, RawHttp, emit, progress

MAX_SECONDS = 300


def data(size: int) -> dict[str, Any]:
    value = {"pad": ""}
    value["pad"] = "x" * max(0, size - len(orjson.dumps(value)))
    return value


async def drive(
    port: int, api_key: str, *, batch: int, users: int, concurrency: int, seconds: float, size: int
) -> dict[str, Any]:
    """Requests back to back from ``concurrency`` lanes for ``seconds``; counts accepted messages."""
    payload = data(size)
    accepted = 0
    requests = 0
    refused: dict[str, int] = {}
    latencies: list[float] = []
    counter = 0
    async with RawHttp("127.0.0.1", port, api_key, size=concurrency, timeout_s=60) as http:
        await asyncio.gather(*(http.request("GET", "/healthz") for _ in range(concurrency)))
        started = time.monotonic()
        stop_at = started + seconds

        async def lane() -> None:
            nonlocal accepted, requests, counter
            while time.monotonic() < stop_at:
                first = counter
                counter += batch
                if batch == 1:
                    path, body = (
                        "/v1/messages",
                        {"to": {"users": [f"i{first % users}"]}, "event": "bench", "data": payload},
                    )
                else:
                    path = "/v1/messages/batch"
                    body = {
                        "messages": [
                            {"to": {"users": [f"i{(first + k) % users}"]}, "event": "bench", "data": payload}
                            for k in range(batch)
                        ]
                    }
                sent = time.monotonic()
                status, answer = await http.request("POST", path, body)
                latencies.append((time.monotonic() - sent) * 1000)
                requests += 1
                if status != 202:
                    refused[str(status)] = refused.get(str(status), 0) + 1
                elif batch == 1:
                    accepted += 1
                else:
                    for item in answer["results"]:
                        if "messages" in item:
                            accepted += 1
                        else:
                            refused[item["error"]["code"]] = refused.get(item["error"]["code"], 0) + 1

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "accepted": accepted,
        "requests": requests,
        "seconds": round(elapsed, 2),
        "accepted_per_s": round(accepted / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "request_ms": common.summary_ms(latencies),
        "refused": refused,
    }


def floor(args: argparse.Namespace, workdir: Path, base: dict[str, Any]) -> None:
    """The single phase's requests against bare uvicorn (``http_floor_server.py``)."""
    port = common.free_port()
    server = Proc("http-floor", common.python("http_floor_server.py", "--port", str(port)), log=workdir / "floor.log")
    try:
        try:
            common.wait_for_port(port)
        except TimeoutError:
            raise RuntimeError(f"the floor server did not start:\n{server.log_tail()}") from None
        phase = {"batch": 1, "users": args.users, "concurrency": args.concurrency}
        asyncio.run(drive(port, "floor", seconds=1, size=args.size, **phase))
        progress(f"ingest: single against the HTTP floor for {args.seconds:.0f} s")
        meter = CpuMeter({"floor": server.pid}).start()
        result = asyncio.run(drive(port, "floor", seconds=args.seconds, size=args.size, **phase))
        used = meter.stop()
        emit(
            {
                **base,
                "metric": "ingest",
                "target": "baseline: uvicorn as Herald runs it, a 202 for every request, nothing read",
                "phase": "single-floor",
                "batch": 1,
                "in_flight": args.concurrency,
                **result,
                "cpu_s": used,
                "cpu_ms_per_message": {"floor": round(1000 * used["floor"] / max(1, result["accepted"]), 4)},
            }
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="single requests in flight")
    parser.add_argument("--batch", type=int, default=1000, help="messages per batch request")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="batch requests in flight")
    parser.add_argument("--users", type=int, default=1000, help="distinct recipients")
    parser.add_argument("--size", type=int, default=100, help="bytes of JSON in each message's data")
    parser.add_argument("--phases", default="single,batch,batch-one-channel")
    parser.add_argument("--profile", type=Path, help="py-spy collect (and the store server) into DIR, per phase")
    parser.add_argument("--no-baseline", action="store_true", help="skip the HTTP floor after the single phase")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)
    base = {"bench": "ingest", **common.machine(), "versions": common.versions()}
    profiler = common.Profiler(args.profile)
    phases = {
        "single": {"batch": 1, "users": args.users, "concurrency": args.concurrency},
        "batch": {"batch": args.batch, "users": max(args.users, args.batch), "concurrency": args.batch_concurrency},
        "batch-one-channel": {"batch": args.batch, "users": 1, "concurrency": args.batch_concurrency},
    }
    with (
        common.scratch("herald-bench-ingest-") as workdir,
        common.deadline(MAX_SECONDS, "ingest benchmark"),
        Cluster("bench_ing", roles=("auth", "collect"), push=0, workdir=workdir / "cluster") as cluster,
    ):
        port = cluster.ports["collect"]
        # Warm-up: counters, indexes, pooled connections.
        asyncio.run(drive(port, cluster.api_key, batch=10, users=100, concurrency=4, seconds=1, size=args.size))
        for name in [p.strip() for p in args.phases.split(",") if p.strip()]:
            phase = phases[name]
            progress(f"ingest: {name} for {args.seconds:.0f} s ({phase})")
            profiler.attach(f"ingest-{name}-collect", cluster.procs["collect"].pid, args.seconds)
            profiler.attach(f"ingest-{name}-mongo", cluster.procs["mongo"].pid, args.seconds)
            meter = CpuMeter({"collect": cluster.procs["collect"].pid, "mongo": cluster.procs["mongo"].pid}).start()
            result = asyncio.run(drive(port, cluster.api_key, seconds=args.seconds, size=args.size, **phase))
            used = meter.stop()
            emit(
                {
                    **base,
                    "metric": "ingest",
                    "target": "one collect process, MongoDB-wire store, RabbitMQ with confirms",
                    "phase": name,
                    "batch": phase["batch"],
                    "in_flight": phase["concurrency"],
                    **result,
                    "cpu_s": used,
                    "cpu_ms_per_message": {
                        k: round(1000 * v / max(1, result["accepted"]), 4) for k, v in used.items() if k != "machine"
                    },
                }
            )
            for summary in profiler.finish():
                emit({**base, **summary})
        if "single" in args.phases.split(",") and not args.no_baseline:
            floor(args, workdir, base)


if __name__ == "__main__":
    sys.exit(main())
