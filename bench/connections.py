"""Idle authenticated connections: memory per connection, handshakes per second, heartbeats.

Starts auth and push nodes as processes on RabbitMQ, Redis and the MongoDB-wire stand-in
(the honest setup for "token check included": every handshake is an HTTP introspection
call from the node to auth, which reads the token from the store). Connect tokens, one
per user, are minted through auth's API before anything is timed. Client processes
(``bench/wsload.py``) then open the connections, each from a loopback source address of
its own and at most 15,000 sockets per process (20,000 open files is a hard limit here).

Measured:
- handshakes per second: connections opened / wall time, a handshake counting from the
  TCP connect to the welcome frame (token introspection, presence in Redis, the user's
  cursors and groups read from the store);
- memory per connection: the RSS growth of the push process(es) (VmRSS) / connections,
  after a hold that covers at least one heartbeat;
- heartbeats on time while the connections are held: the age of each node's heartbeat key
  in Redis (sampled twice a second; a refresh is due every HERALD_HEARTBEAT_S), the share of
  connections that answered the server's keepalive ping, and the round trip of application
  pings from a sample of clients.
Then the same clients against bare ``websockets`` servers (``bench/bare_server.py``, the
same process count and port sharing) hold the same number of connections: the baseline.

    python bench/connections.py                     # 10k connections, one push process
    python bench/connections.py --full              # 100k over six push processes sharing a port,
                                                    # 10 connections per user (10k tokens)
    python bench/connections.py --connections 2000 --hold 5
    python bench/connections.py --standalone --connections 4000 --hold 3
                                                    # `herald dev`: the same handshakes against one
                                                    # process with embedded parts (SQLite, dicts,
                                                    # in-process queues): Herald's own cost per
                                                    # handshake without the drivers and servers
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import common
from common import Cluster, CpuMeter, Proc, emit, progress
from wsload import Workers

MAX_SECONDS = 900


def plan_workers(connections: int, requested: int) -> int:
    return max(requested, math.ceil(connections / common.SOCKETS_PER_PROCESS), 1)


def open_connections(
    workers: Workers, port: int, paths: list[str], sources: list[str], concurrency: int, welcome: bool
) -> dict[str, Any]:
    shares = common.split(len(paths), len(workers))
    lanes = common.split(concurrency, len(workers))
    commands: list[dict[str, Any] | None] = []
    start = 0
    for index, share in enumerate(shares):
        commands.append(
            {
                "cmd": "open",
                "host": "127.0.0.1",
                "port": port,
                "paths": paths[start : start + share],
                "source": sources[index],
                "concurrency": max(1, lanes[index]),
                "welcome": welcome,
                "resume": welcome,
            }
            if share
            else None
        )
        start += share
    answers = [a for a in workers.call(commands, timeout_s=8 * MAX_SECONDS) if a is not None]
    ok = sum(a["ok"] for a in answers)
    failed: dict[str, int] = {}
    for answer in answers:
        for reason, count in answer["failed"].items():
            failed[reason] = failed.get(reason, 0) + count
    wall = max(a["finished"] for a in answers) - min(a["started"] for a in answers)
    p50 = statistics.median([a["handshake_ms"][0] for a in answers if a["handshake_ms"]] or [math.nan])
    p99 = max([a["handshake_ms"][1] for a in answers if a["handshake_ms"]] or [math.nan])
    return {"ok": ok, "failed": failed, "wall_s": wall, "handshake_p50_ms": p50, "handshake_p99_ms_max": p99}


class HeartbeatWatch(threading.Thread):
    """Samples the TTL of each node's heartbeat key: its age says when it was last refreshed."""

    def __init__(self, redis_url: str, keys: list[str], ttl_ms: int) -> None:
        super().__init__(daemon=True)
        import redis

        self._redis = redis.Redis.from_url(redis_url)
        self._keys = keys
        self._ttl_ms = ttl_ms
        self.max_age_s: dict[str, float] = dict.fromkeys(keys, 0.0)
        self.missing = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            pipe = self._redis.pipeline(transaction=False)
            for key in self._keys:
                pipe.pttl(key)
            for key, left in zip(self._keys, pipe.execute(), strict=True):
                if left < 0:
                    self.missing += 1
                    continue
                self.max_age_s[key] = max(self.max_age_s[key], (self._ttl_ms - left) / 1000)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)
        self._redis.close()


def hold(workers: Workers, seconds: float, sample: int) -> dict[str, Any]:
    """Keep the connections idle for ``seconds``; ping a sample of them once a second."""
    answers = workers.all(
        {"cmd": "ping", "sample": sample, "rounds": max(1, int(seconds)), "interval_s": 1.0},
        timeout_s=seconds + 120,
    )
    rtts = [r for a in answers for r in a["rtts"]]
    stats = workers.all({"cmd": "stats"})
    return {
        "ping_rtt_ms": common.summary_ms(rtts) if rtts else None,
        "pings_lost": sum(a["lost"] for a in answers),
        "open": sum(s["open"] for s in stats),
        "closed": sum(s["closed"] for s in stats),
        "close_codes": {k: v for s in stats for k, v in s["close_codes"].items()},
        "server_pings_answered": sum(s["server_pings"] for s in stats),
    }


def measure(
    name: str,
    pids: list[int],
    port: int,
    paths: list[str],
    warm_paths: list[str],
    args: argparse.Namespace,
    welcome: bool,
    extra_pids: dict[str, int] | None = None,
    heartbeat: tuple[str, list[str], int] | None = None,
    profiler: common.Profiler | None = None,
    counting: tuple[common.StoreCommands, dict[str, int]] | None = None,
) -> dict[str, Any]:
    clients = plan_workers(len(paths) + len(warm_paths), args.clients)
    workers = Workers(clients, args.workdir)
    sources = common.source_addresses(clients)
    try:
        progress(f"{name}: {len(warm_paths)} warm-up connections from {clients} client processes")
        open_connections(workers, port, warm_paths, sources, args.concurrency, welcome)
        time.sleep(1)
        rss_before = sum(common.rss_kb(pid) for pid in pids)
        if counting is not None:
            counting[0].start(counting[1])
        meter = CpuMeter({f"server{i}": pid for i, pid in enumerate(pids)} | (extra_pids or {})).start()
        if profiler is not None:
            for i, pid in enumerate(pids[:1]):
                profiler.attach(f"connections-{name}-server{i}", pid, args.profile_seconds)
        progress(f"{name}: opening {len(paths)} connections, {args.concurrency} handshakes in flight")
        opened = open_connections(workers, port, paths, sources, args.concurrency, welcome)
        progress(f"{name}: {opened['ok']} open in {opened['wall_s']:.1f} s; failed {opened['failed']}")
        # A push node reads each new connection's backlog after its welcome: that work is
        # part of connecting, so the CPU meter runs until the servers are quiet again.
        # Many nodes heartbeating many connections are never quite idle: bound the wait.
        settled = common.wait_quiet([*pids, *(extra_pids or {}).values()], max_s=60 if len(pids) > 1 else 300)
        used = meter.stop()
        commands = counting[0].stop(opened["ok"]) if counting is not None else None
        progress(f"{name}: quiet {settled} s after the last handshake")
        rss_open = sum(common.rss_kb(pid) for pid in pids)
        watch = None
        if heartbeat is not None:
            watch = HeartbeatWatch(*heartbeat)
            watch.start()
        progress(f"{name}: holding {opened['ok']} idle connections for {args.hold:.0f} s")
        held = hold(workers, args.hold, args.ping_sample)
        if watch is not None:
            watch.stop()
        rss_after = sum(common.rss_kb(pid) for pid in pids)
        server_cpu = sum(v for k, v in used.items() if k.startswith("server"))
        result: dict[str, Any] = {
            "connections": opened["ok"],
            "failed": opened["failed"],
            "server_processes": len(pids),
            "client_processes": clients,
            "handshakes_per_s": round(opened["ok"] / opened["wall_s"], 1) if opened["wall_s"] else None,
            "handshake_ms": {"p50": opened["handshake_p50_ms"], "p99_worst_client": opened["handshake_p99_ms_max"]},
            "server_cpu_ms_per_connect": round(1000 * server_cpu / max(1, opened["ok"]), 3),
            "cpu_s_connecting": used,
            "rss_kb": {"before": rss_before, "open": rss_open, "after_hold": rss_after},
            "kb_per_connection": round((rss_after - rss_before) / max(1, opened["ok"]), 2),
            "kb_per_connection_at_open": round((rss_open - rss_before) / max(1, opened["ok"]), 2),
            "settle_s": settled,
            "hold_s": args.hold,
            **held,
        }
        if commands is not None:
            result["store_commands_per_connect"] = commands
        if watch is not None:
            result["heartbeat_max_age_s"] = {k.rsplit(":", 1)[-1]: round(v, 2) for k, v in watch.max_age_s.items()}
            result["heartbeat_key_missing_samples"] = watch.missing
        return result
    finally:
        workers.stop()


def minted_paths(name: str, auth_port: int, api_key: str, args: argparse.Namespace) -> tuple[list[str], int, float]:
    """The request paths of every connection (warm-up first) with tokens minted through
    auth's API, the number of users, and the seconds minting took. With --per-user K,
    connection i uses token i % users: a user's K connections are spread over the run,
    each handshake still checked at auth."""
    total = args.connections + args.warm
    count = math.ceil(total / args.per_user)
    progress(f"{name}: minting {count} connect tokens through auth ({args.mint_concurrency} in flight)")
    started = time.monotonic()
    users = [f"c{i}" for i in range(count)]
    tokens = asyncio.run(common.mint_tokens(auth_port, api_key, users, args.mint_concurrency))
    return [f"/ws?token={tokens[i % count]}" for i in range(total)], count, time.monotonic() - started


def run_herald(args: argparse.Namespace, profiler: common.Profiler) -> dict[str, Any]:
    heartbeat = {"HERALD_HEARTBEAT_S": str(args.heartbeat), "HERALD_MAX_CONNECTIONS_PER_USER": "1000"}
    counting = common.StoreCommands(args.workdir / "store-commands") if args.store_commands else None
    with Cluster(
        "bench_conn",
        roles=("auth",),
        push=args.nodes,
        shared_port=args.nodes > 1,
        env_extra=heartbeat | (counting.env() if counting else {}),
        workdir=args.workdir / "cluster",
    ) as cluster:
        paths, count, minted_s = minted_paths("herald", cluster.ports["auth"], cluster.api_key, args)
        names = [f"{cluster.namespace}:node:{node}" for node in cluster.node_ids]
        result = measure(
            "herald",
            cluster.push_pids,
            cluster.push_ports[0],
            paths[args.warm :],
            paths[: args.warm],
            args,
            welcome=True,
            extra_pids={"auth": cluster.procs["auth"].pid, "mongo": cluster.procs["mongo"].pid},
            heartbeat=(cluster.redis, names, int(args.heartbeat * 3 * 1000)),
            profiler=profiler,
            counting=(counting, cluster.service_pids()) if counting else None,
        )
        result["tokens_minted_per_s"] = round(count / minted_s, 1)
        result["users"] = count
        result["connections_per_user"] = args.per_user
        result["heartbeat_s"] = args.heartbeat
        return result


def run_standalone(args: argparse.Namespace, profiler: common.Profiler) -> dict[str, Any]:
    """``herald dev``: auth, collect, dispatch and push in one process on the embedded
    store, directory and bus. Its CPU per handshake is everything Herald does for one, the
    token check at auth included, without a driver or a server."""
    env = {"HERALD_HEARTBEAT_S": str(args.heartbeat), "HERALD_MAX_CONNECTIONS_PER_USER": "1000"}
    with common.herald_dev(args.workdir, env) as (pid, port_base, api_key):
        paths, count, _ = minted_paths("standalone", port_base + 1, api_key, args)
        push_port = port_base + 4
        result = measure(
            "standalone", [pid], push_port, paths[args.warm :], paths[: args.warm], args, True, None, None, profiler
        )
        result["users"] = count
        result["connections_per_user"] = args.per_user
        return result


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    port = common.free_port_block(1) + 1
    procs = [
        Proc(
            f"bare-{i}",
            common.python(
                "bare_server.py",
                "--port",
                str(port),
                "--heartbeat",
                str(args.bare_heartbeat),
                *(["--reuse-port"] if args.nodes > 1 else []),
            ),
            log=args.workdir / f"bare-{i}.log",
        )
        for i in range(args.nodes)
    ]
    try:
        deadline = time.monotonic() + 20
        for proc in procs:
            while "listening" not in (proc.log.read_text() if proc.log and proc.log.exists() else ""):
                if time.monotonic() > deadline or not proc.alive():
                    raise RuntimeError(f"bare server did not start:\n{proc.log_tail()}")
                time.sleep(0.1)
        paths = ["/"] * (args.connections + args.warm)
        pids = [proc.pid for proc in procs]
        return measure("bare", pids, port, paths[args.warm :], paths[: args.warm], args, welcome=False)
    finally:
        for proc in procs:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100k connections over six push processes")
    parser.add_argument("--connections", type=int, help="timed connections (default 10,000; --full 100,000)")
    parser.add_argument("--nodes", type=int, help="push processes sharing the port (default 1; --full 6)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (at least one per 15k sockets)")
    parser.add_argument("--warm", type=int, default=200, help="connections opened before the RSS baseline")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes in flight, all clients together")
    parser.add_argument("--mint-concurrency", type=int, default=32)
    parser.add_argument(
        "--per-user",
        type=int,
        help="connections per user and token (default 1; --full 10: the stand-in store scans its whole"
        " token collection on every read, so 100k live tokens would make each check cost ~100 ms)",
    )
    parser.add_argument("--hold", type=float, help="seconds to hold the connections idle (default 12; --full 25)")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="HERALD_HEARTBEAT_S and the bare ping interval")
    parser.add_argument("--ping-sample", type=int, default=20, help="clients per process sending app pings")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare websockets baseline")
    parser.add_argument("--baseline-only", action="store_true", help="measure only the bare websockets server")
    parser.add_argument(
        "--bare-heartbeat", type=float, help="the bare server's ping interval (default --heartbeat; 0: no keepalive)"
    )
    parser.add_argument(
        "--store-commands",
        action="store_true",
        help="count auth's and the push nodes' MongoDB commands and documents per connect (bench/hooks)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="measure `herald dev` (embedded parts, one process) instead"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the (first) push process during the handshakes into DIR")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    args = parser.parse_args()
    args.connections = min(args.connections or (100_000 if args.full else 10_000), 120_000)
    args.nodes = args.nodes or (6 if args.full else 1)
    args.per_user = max(1, args.per_user or (10 if args.full else 1))
    args.hold = args.hold if args.hold is not None else (25.0 if args.full else 12.0)
    args.bare_heartbeat = args.heartbeat if args.bare_heartbeat is None else args.bare_heartbeat
    per_node = (args.connections + args.warm) / args.nodes
    if per_node > common.FILES_PER_PROCESS - 500:
        parser.error(f"{per_node:.0f} connections per push process: past the 20,000 open files limit; add --nodes")
    profiler = common.Profiler(args.profile)
    base = {"bench": "connections", **common.machine(), "versions": common.versions()}
    # 100k handshakes at the ~40/s this machine manages take most of an hour.
    limit = MAX_SECONDS if not args.full else 8 * MAX_SECONDS
    with common.scratch("herald-bench-conn-") as args.workdir, common.deadline(limit, "connections benchmark"):
        herald = None
        if args.standalone:
            herald = run_standalone(args, profiler)
            emit({**base, "metric": "idle_connections", "target": "standalone", **herald})
            for summary in profiler.finish():
                emit({**base, **summary})
        elif not args.baseline_only:
            herald = run_herald(args, profiler)
            emit({**base, "metric": "idle_connections", "target": "herald", **herald})
            for summary in profiler.finish():
                emit({**base, **summary})
        if not args.no_baseline:
            bare = run_bare(args)
            emit(
                {
                    **base,
                    "metric": "idle_connections",
                    "target": "bare websockets",
                    "bare_heartbeat_s": args.bare_heartbeat,
                    **bare,
                }
            )
            if herald is not None:
                emit(
                    {
                        **base,
                        "metric": "idle_connections_ratio",
                        "memory_herald_over_bare": round(herald["kb_per_connection"] / bare["kb_per_connection"], 2),
                        "handshakes_herald_over_bare": round(herald["handshakes_per_s"] / bare["handshakes_per_s"], 3),
                    }
                )


if __name__ == "__main__":
    sys.exit(main())
