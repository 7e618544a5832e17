"""Group fan-out: deliveries per second of 100-byte messages to a group of 10k members.

Starts the full cluster (auth, collect, dispatch and two push nodes as processes on
RabbitMQ, Redis and the MongoDB-wire stand-in), mints a token per member through auth,
puts every member in one group through collect, and connects them from client processes
(``bench/wsload.py``, which count frames without decoding them). Then, for each variant:

- ``one node``: every member on push node 1;
- ``two nodes``: half the members moved to push node 2;

it POSTs ``--messages`` group messages (100 bytes of ``data`` each, one request at a time
by default, so offsets reach the node in order: concurrent requests can publish offset n+1
before n, and each member's connection then reads the store for the hole) and counts the
frames the clients receive: deliveries per second is frames / time from the first POST to
the last frame, and server CPU is the push process(es)' utime +
stime over that time (/proc/<pid>/stat).

In the same run the same client processes connect to bare ``websockets`` servers
(``bench/bare_server.py``: one, then two, the members split the same way) which send the
same number of frames of the same shape with ``websockets.broadcast``: the baseline the
issue asks Herald to beat by 1.5x. The ratio is what to read on a noisy machine.

    python bench/fanout.py                         # 10k members, 50 messages per variant
    python bench/fanout.py --members 2000 --messages 20
    python bench/fanout.py --spaced --one-node     # one message at a time: nothing to coalesce

With ``--spaced`` each message is sent once every member got the previous one, for Herald
and for the bare server alike: every delivery is then one frame written on its own, and the
figure is the per-socket cost of the delivery loop against ``websockets.broadcast``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import orjson
from common import Cluster, CpuMeter, Proc, RawHttp, emit, progress
from websockets.sync.client import connect as sync_connect
from wsload import Workers

MAX_SECONDS = 1500
# --spaced: how often the clients are asked whether a message's fan-out is complete.
SPACED_POLL_S = 0.05
GROUP = "bench"


def payload(size: int) -> dict[str, Any]:
    """``data`` of ``size`` bytes of JSON, carrying its send time."""
    data: dict[str, Any] = {"t": time.monotonic(), "pad": ""}
    data["pad"] = "x" * max(0, size - len(orjson.dumps(data)))
    return data


async def post_group_messages(port: int, api_key: str, count: int, size: int, concurrency: int) -> list[int]:
    statuses: list[int] = []
    indexes = iter(range(count))
    async with RawHttp("127.0.0.1", port, api_key, size=concurrency) as http:

        async def lane() -> None:
            for _ in indexes:
                body = {"to": {"group": GROUP}, "event": "bench", "data": payload(size)}
                status, _ = await http.request("POST", "/v1/messages", body)
                statuses.append(status)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return statuses


def wait_frames(
    workers: Workers, expected: int, idle_s: float = 20.0, max_s: float = 300.0, poll_s: float = 0.2
) -> dict[str, Any]:
    """Poll the clients until ``expected`` frames arrived or none came for ``idle_s``."""
    deadline = time.monotonic() + max_s
    seen, quiet_since = -1, time.monotonic()
    while True:
        stats = workers.all({"cmd": "stats"})
        frames = sum(s["frames"] for s in stats)
        now = time.monotonic()
        if frames != seen:
            seen, quiet_since = frames, now
        if frames >= expected or now - quiet_since > idle_s or now > deadline:
            lasts = [s["last"] for s in stats if s["last"]]
            return {
                "frames": frames,
                "last": max(lasts) if lasts else now,
                "open": sum(s["open"] for s in stats),
                "close_codes": {k: v for s in stats for k, v in s["close_codes"].items()},
            }
        time.sleep(poll_s)


def connect_all(workers: Workers, ports: list[int], paths: list[str], sources: list[str], welcome: bool) -> int:
    """Worker i connects its share of ``paths`` to ``ports[i]``."""
    shares = common.split(len(paths), len(workers))
    commands: list[dict[str, Any] | None] = []
    start = 0
    for index, share in enumerate(shares):
        commands.append(
            {
                "cmd": "open",
                "host": "127.0.0.1",
                "port": ports[index],
                "paths": paths[start : start + share],
                "source": sources[index],
                "concurrency": 32,
                "welcome": welcome,
                "resume": welcome,
            }
        )
        start += share
    answers = workers.call(commands, timeout_s=MAX_SECONDS)
    failed = [a["failed"] for a in answers if a and a["failed"]]
    if failed:
        progress(f"connect failures: {failed}")
    return sum(a["ok"] for a in answers if a)


def one_at_a_time(send: Callable[[], None], workers: Workers, members: int, messages: int) -> dict[str, Any]:
    """Send ``messages`` one at a time, each once the previous reached every member. Each
    message's fan-out time is its first frame to its last at the clients: the delivery
    loop's own pace, without the wait for the clients' next poll or the POST's way to the
    node."""
    frames, spreads, last = 0, [], 0.0
    for _ in range(messages):
        send()
        wait_frames(workers, members, poll_s=SPACED_POLL_S)
        stats = [s for s in workers.all({"cmd": "stats", "reset": True}) if s["frames"]]
        frames += sum(s["frames"] for s in stats)
        if stats:
            last = max(s["last"] for s in stats)
            spreads.append(last - min(s["first"] for s in stats))
    result = wait_frames(workers, 0)
    return {**result, "frames": frames, "last": last or result["last"], "spreads": spreads}


def result_of(
    name: str, variant: str, frames: dict[str, Any], started: float, used: dict[str, float], members: int, count: int
) -> dict[str, Any]:
    elapsed = frames["last"] - started
    server = sum(v for k, v in used.items() if k.startswith("server"))
    return {
        "metric": "group_fanout",
        "target": name,
        "variant": variant,
        "members": members,
        "messages": count,
        "expected": members * count,
        "deliveries": frames["frames"],
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(frames["frames"] / elapsed) if elapsed > 0 else None,
        "server_cpu_s": round(server, 2),
        "server_cpu_us_per_delivery": round(1e6 * server / max(1, frames["frames"]), 2),
        "cpu_s": used,
        "open_after": frames["open"],
        "close_codes": frames["close_codes"],
        **in_fanout(frames.get("spreads"), members),
    }


def in_fanout(spreads: list[float] | None, members: int) -> dict[str, Any]:
    """One at a time: deliveries per second while a message is being fanned out."""
    if not spreads:
        return {}
    return {
        "fanout_ms_per_message": common.summary_ms([1000 * s for s in spreads]),
        "deliveries_per_s_in_fanout": round(members * len(spreads) / sum(spreads)) if sum(spreads) > 0 else None,
    }


def herald_round(
    cluster: Cluster,
    workers: Workers,
    pids: list[int],
    args: argparse.Namespace,
    variant: str,
    profiler: common.Profiler,
) -> dict[str, Any]:
    workers.all({"cmd": "stats", "reset": True})
    watched = {f"server{i}": pid for i, pid in enumerate(pids)}
    watched |= {name: cluster.procs[name].pid for name in ("collect", "dispatch", "mongo")}
    if profiler.directory is not None and variant == "one node":
        profiler.attach(f"fanout-herald-{variant.replace(' ', '-')}", pids[0], args.profile_seconds)
    meter = CpuMeter(watched).start()
    started = time.monotonic()
    statuses: list[int] = []
    if args.spaced:

        def send_one() -> None:
            collect = cluster.ports["collect"]
            statuses.extend(asyncio.run(post_group_messages(collect, cluster.api_key, 1, args.size, 1)))

        frames = one_at_a_time(send_one, workers, args.members, args.messages)
    else:
        statuses = asyncio.run(
            post_group_messages(
                cluster.ports["collect"], cluster.api_key, args.messages, args.size, args.post_concurrency
            )
        )
        frames = wait_frames(workers, args.members * args.messages)
    if any(status != 202 for status in statuses):
        progress(f"collect refused some messages: {sorted(set(statuses))}")
    used = meter.stop()
    result = result_of("herald", variant, frames, started, used, args.members, args.messages)
    result["spaced"] = args.spaced
    result["profiles"] = profiler.finish(now=True)
    return result


def bare_round(
    workers: Workers,
    procs: list[Proc],
    ports: list[int],
    args: argparse.Namespace,
    variant: str,
    profiler: common.Profiler,
) -> dict[str, Any]:
    workers.all({"cmd": "stats", "reset": True})
    if profiler.directory is not None and variant == "one node":
        profiler.attach(f"fanout-bare-{variant.replace(' ', '-')}", procs[0].pid, args.profile_seconds)
    with contextlib.ExitStack() as stack:
        controls = [
            stack.enter_context(sync_connect(f"ws://127.0.0.1:{port}/control", max_size=None))
            for port in sorted(set(ports))
        ]
        meter = CpuMeter({f"server{i}": proc.pid for i, proc in enumerate(procs)}).start()
        started = time.monotonic()

        def broadcast(count: int) -> None:
            command = orjson.dumps({"type": "bench-broadcast", "count": count, "size": args.size}).decode()
            for control in controls:
                control.send(command)
            for control in controls:
                control.recv(timeout=300)

        if args.spaced:
            frames = one_at_a_time(lambda: broadcast(1), workers, args.members, args.messages)
        else:
            broadcast(args.messages)
            frames = wait_frames(workers, args.members * args.messages)
    used = meter.stop()
    result = result_of("bare websockets", variant, frames, started, used, args.members, args.messages)
    result["spaced"] = args.spaced
    result["profiles"] = profiler.finish(now=True)
    return result


def start_bare(count: int, args: argparse.Namespace) -> tuple[list[Proc], list[int]]:
    base = common.free_port_block(count)
    procs, ports = [], []
    for i in range(count):
        port = base + 1 + i
        log = args.workdir / f"bare-{i}.log"
        procs.append(Proc(f"bare-{i}", common.python("bare_server.py", "--port", str(port)), log=log))
        ports.append(port)
    for proc in procs:
        deadline = time.monotonic() + 20
        while "listening" not in (proc.log.read_text() if proc.log and proc.log.exists() else ""):
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"bare server did not start:\n{proc.log_tail()}")
            time.sleep(0.1)
    return procs, ports


def report(result: dict[str, Any], base: dict[str, Any]) -> None:
    """The result's JSON line, then one line per profile taken during it."""
    profiles = result.pop("profiles", [])
    emit({**base, **result})
    for summary in profiles:
        emit({**base, **summary})


def ratio(herald: dict[str, Any], bare: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return {
        **base,
        "metric": "group_fanout_ratio",
        "variant": herald["variant"],
        "spaced": herald["spaced"],
        "deliveries_per_s_herald_over_bare": round(herald["deliveries_per_s"] / bare["deliveries_per_s"], 3),
        **(
            {
                "in_fanout_herald_over_bare": round(
                    herald["deliveries_per_s_in_fanout"] / bare["deliveries_per_s_in_fanout"], 3
                )
            }
            if herald.get("deliveries_per_s_in_fanout") and bare.get("deliveries_per_s_in_fanout")
            else {}
        ),
        "cpu_per_delivery_herald_over_bare": round(
            herald["server_cpu_us_per_delivery"] / bare["server_cpu_us_per_delivery"], 2
        ),
    }


def run(args: argparse.Namespace, base: dict[str, Any], profiler: common.Profiler) -> None:
    clients = max(2, -(-args.members // common.SOCKETS_PER_PROCESS))
    herald_results = []
    with Cluster(
        "bench_fan",
        push=2,
        env_extra={"HERALD_MAX_CONNECTIONS_PER_USER": "1000"},
        workdir=args.workdir / "cluster",
    ) as cluster:
        users = [f"m{i}" for i in range(args.members)]
        progress(f"herald: minting {args.members} tokens and joining them to group:{GROUP}")
        tokens = asyncio.run(common.mint_tokens(cluster.ports["auth"], cluster.api_key, users, 32))
        asyncio.run(common.join_group(cluster.ports["collect"], cluster.api_key, GROUP, users, 32))
        paths = [f"/ws?token={token}" for token in tokens]
        workers = Workers(clients, args.workdir)
        sources = common.source_addresses(clients)
        try:
            node1, node2 = cluster.push_ports
            progress(f"herald: connecting {args.members} members to push node 1 from {clients} client processes")
            opened = connect_all(workers, [node1] * clients, paths, sources, welcome=True)
            busy = [*cluster.push_pids, cluster.procs["mongo"].pid]
            settled = common.wait_quiet(busy)
            progress(f"herald: {opened} connected, node quiet after {settled} s; one node, {args.messages} messages")
            one = herald_round(cluster, workers, cluster.push_pids[:1], args, "one node", profiler)
            report(one, base)
            herald_results.append(one)
            if not args.one_node:
                progress("herald: moving half the members to push node 2")
                moved = clients // 2
                workers.call([None] * (clients - moved) + [{"cmd": "drop"}] * moved)
                shares = common.split(len(paths), clients)
                start = sum(shares[: clients - moved])
                commands: list[dict[str, Any] | None] = [None] * (clients - moved)
                for index in range(clients - moved, clients):
                    commands.append(
                        {
                            "cmd": "open",
                            "host": "127.0.0.1",
                            "port": node2,
                            "paths": paths[start : start + shares[index]],
                            "source": common.source_addresses(1)[0],
                            "concurrency": 32,
                        }
                    )
                    start += shares[index]
                workers.call(commands, timeout_s=MAX_SECONDS)
                settled = common.wait_quiet(busy)
                progress(f"herald: nodes quiet after {settled} s; two nodes, {args.messages} messages")
                two = herald_round(cluster, workers, cluster.push_pids, args, "two nodes", profiler)
                report(two, base)
                herald_results.append(two)
        finally:
            workers.stop()
    workers = Workers(clients, args.workdir)
    procs, ports = start_bare(1 if args.one_node else 2, args)
    try:
        progress(f"bare: connecting {args.members} clients to one websockets server")
        sources = common.source_addresses(clients)
        connect_all(workers, [ports[0]] * clients, ["/"] * args.members, sources, welcome=False)
        time.sleep(1)
        one = bare_round(workers, procs[:1], ports[:1], args, "one node", profiler)
        report(one, base)
        emit(ratio(herald_results[0], one, base))
        if not args.one_node:
            moved = clients // 2
            workers.call([None] * (clients - moved) + [{"cmd": "drop"}] * moved)
            shares = common.split(args.members, clients)
            workers.call(
                [None] * (clients - moved)
                + [
                    {
                        "cmd": "open",
                        "host": "127.0.0.1",
                        "port": ports[1],
                        "paths": ["/"] * shares[index],
                        "source": common.source_addresses(1)[0],
                        "concurrency": 32,
                        "welcome": False,
                        "resume": False,
                    }
                    for index in range(clients - moved, clients)
                ]
            )
            time.sleep(1)
            two = bare_round(workers, procs, ports, args, "two nodes", profiler)
            report(two, base)
            emit(ratio(herald_results[1], two, base))
    finally:
        workers.stop()
        for proc in procs:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50, help="group messages per variant")
    parser.add_argument("--size", type=int, default=100, help="bytes of JSON in each message's data")
    parser.add_argument(
        "--post-concurrency",
        type=int,
        default=1,
        help="POSTs in flight; more than one lets offsets reach the node out of order (see BENCHMARKS.md)",
    )
    parser.add_argument("--one-node", action="store_true", help="skip the two-node variant")
    parser.add_argument(
        "--spaced",
        action="store_true",
        help="send each message only once the previous one reached every member (no queueing at the node)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy push node 1 and the bare server into DIR")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    args = parser.parse_args()
    args.members = min(args.members, 30_000)
    args.messages = min(args.messages, 1000)
    profiler = common.Profiler(args.profile)
    base = {"bench": "fanout", **common.machine(), "versions": common.versions()}
    with common.scratch("herald-bench-fanout-") as args.workdir, common.deadline(MAX_SECONDS, "fan-out benchmark"):
        run(args, base, profiler)


if __name__ == "__main__":
    sys.exit(main())
