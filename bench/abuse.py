"""Real users' handshake and delivery latency while a push node is abused.

A cluster (auth, collect, dispatch, one push node as processes on RabbitMQ, Redis and
the MongoDB-wire stand-in) is measured in phases of ``--seconds`` each, in one run:

- ``baseline``: no abuse;
- ``bad_tokens``: ``--bad-tokens`` (2,000) concurrent loops, each opening a socket, asking
  for the upgrade with a made-up token of the right shape (auth never issued it), reading
  the 401, and again;
- ``slow_handshakes``: ``--slow`` (1,000) sockets sending a request line, then a header
  line every second, never finishing; each reopened as soon as the node drops it;
- ``publish_flood``: one client (of another app) publishing from its socket as fast as
  the node reads it;
- ``baseline_after``: no abuse again, to see that the node came back.

Through every phase a real user opens a new connection every 100 ms (handshake latency:
socket opened to welcome frame), and another, connected, receives a message every 50 ms
sent through collect (delivery latency: POST sent to frame received). Attackers run in a
child process of their own, from 16 loopback source addresses; the probes here from
127.0.0.1. Prints one JSON line per phase, then a summary with each attack's p99 against
the baseline's (target: at most twice), the baseline being the samples of both quiet
phases together: other load on the machine moves a quiet phase's p99 by itself.
Loopback only; bounded in time (``--seconds`` per phase, about 8 phases' worth of wall
time in all).

    python bench/abuse.py                  # 15 s phases (about 2 min)
    python bench/abuse.py --seconds 5      # the short form scripts/bench runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import Cluster, Proc, RawHttp, emit, progress, summary_ms
from websockets.asyncio.client import connect

from tests.support.rawws import upgrade_request

SOURCES = 16
PROBE_EVERY_S = 0.1
SEND_EVERY_S = 0.05
RAMP_S = 2.0
TARGET_RATIO = 2.0
PHASES = ("baseline", "bad_tokens", "slow_handshakes", "publish_flood", "baseline_after")


def raise_file_limit() -> int:
    """As many open files as the hard limit allows (every socket is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, common.FILES_PER_PROCESS)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# Attackers (run in a child process: python bench/abuse.py --attack KIND ...) ------------
async def bad_tokens(port: int, loops: int, seconds: float, sources: list[str]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def loop(index: int) -> None:
        source = sources[index % len(sources)]
        while time.monotonic() < end:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 5
                )
                writer.write(upgrade_request("/ws", "ht_" + secrets.token_urlsafe(32)))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                counts[head.split(b" ", 2)[1].decode()] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                counts["dropped"] += 1
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(loop(index) for index in range(loops)))
    return {"handshakes": dict(counts), "total": sum(counts.values())}


async def slow_handshakes(port: int, sockets: int, seconds: float, sources: list[str]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    lived: list[float] = []
    end = time.monotonic() + seconds

    async def one(index: int) -> None:
        source = sources[index % len(sources)]
        while time.monotonic() < end:
            opened = time.monotonic()
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 5
                )
                counts["opened"] += 1
                writer.write(b"GET /ws HTTP/1.1\r\n")
                line = 0
                while time.monotonic() < end:
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), 1.0) == b"" or reader.at_eof():
                            break  # the node closed it
                    line += 1
                    writer.write(f"X-Slow-{line}: still typing\r\n".encode())
                    await writer.drain()
                else:
                    continue
                counts["dropped_by_node"] += 1
                lived.append(time.monotonic() - opened)
            except (OSError, TimeoutError):
                counts["reset_or_refused"] += 1
                lived.append(time.monotonic() - opened)
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(one(index) for index in range(sockets)))
    return {"sockets": dict(counts), "longest_lived_s": round(max(lived), 2) if lived else None}


async def publish_flood(ws_url: str, token: str, seconds: float) -> dict[str, Any]:
    replies: Counter[str] = Counter()
    sent = 0
    end = time.monotonic() + seconds
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_queue=None) as ws:
        await ws.recv()  # welcome

        async def receive() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "reply":
                    replies[frame["error"]["code"] if "error" in frame else "ok"] += 1
                elif frame.get("type") == "error":
                    replies["error:" + frame["code"]] += 1

        receiver = asyncio.create_task(receive())
        while time.monotonic() < end:
            frame = {"type": "publish", "seq": sent, "channel": "user:sink", "event": "flood", "data": {"n": sent}}
            await ws.send(json.dumps(frame))
            sent += 1
        await asyncio.sleep(1.0)
        receiver.cancel()
    return {"sent": sent, "answers": dict(replies)}


def attack_main(args: argparse.Namespace) -> None:
    raise_file_limit()
    sources = common.source_addresses(SOURCES)
    if args.attack == "bad_tokens":
        result = asyncio.run(bad_tokens(args.port, args.count, args.seconds, sources))
    elif args.attack == "slow_handshakes":
        result = asyncio.run(slow_handshakes(args.port, args.count, args.seconds, sources))
    else:
        result = asyncio.run(publish_flood(args.ws, args.token, args.seconds))
    print(json.dumps(result), flush=True)


# Real users ------------------------------------------------------------------------------
async def probe(cluster: Cluster, tokens: list[str], receiver_token: str, seconds: float) -> dict[str, Any]:
    """Handshakes every PROBE_EVERY_S and deliveries every SEND_EVERY_S for ``seconds``."""
    ws_url = cluster.ws_urls[0]
    handshakes: list[float] = []
    deliveries: list[float] = []
    failures: Counter[str] = Counter()
    sent_at: dict[str, float] = {}
    run_id = secrets.token_hex(4)  # a late message of an earlier phase is not counted here
    end = time.monotonic() + seconds

    async def handshake_probe() -> None:
        index = 0
        while time.monotonic() < end:
            due = time.monotonic() + PROBE_EVERY_S
            started = time.perf_counter()
            try:
                async with connect(
                    ws_url,
                    additional_headers={"Authorization": f"Bearer {tokens[index % len(tokens)]}"},
                    open_timeout=10,
                ) as ws:
                    await asyncio.wait_for(ws.recv(), 10)  # welcome
                    handshakes.append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # a refused or timed-out real user is the finding, not a crash
                failures[type(exc).__name__] += 1
            index += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {receiver_token}"}) as receiver:
        await receiver.recv()  # welcome

        async def receive() -> None:
            async for raw in receiver:
                frame = json.loads(raw)
                if frame.get("type") != "message":
                    continue
                if frame["data"]["n"] in sent_at:
                    deliveries.append((time.perf_counter() - sent_at.pop(frame["data"]["n"])) * 1000)
                # Acked, so the next phase's connection does not get this one again.
                await receiver.send(json.dumps({"type": "ack", "channel": frame["channel"], "offset": frame["offset"]}))

        async def send() -> None:
            async with RawHttp("127.0.0.1", cluster.ports["collect"], cluster.api_key, size=8) as http:
                number = 0
                while time.monotonic() < end:
                    due = time.monotonic() + SEND_EVERY_S
                    key = f"{run_id}-{number}"
                    sent_at[key] = time.perf_counter()
                    body = {"to": {"users": ["probe-rx"]}, "event": "probe", "data": {"n": key}}
                    asyncio.get_running_loop().create_task(_post(http, body, failures))
                    number += 1
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await asyncio.sleep(3.0)  # the last ones arrive

        receiving = asyncio.create_task(receive())
        await asyncio.gather(handshake_probe(), send())
        receiving.cancel()
    failures["delivery_lost"] += len(sent_at)
    return {
        "handshake_ms": {"count": len(handshakes), **summary_ms(handshakes)},
        "delivery_ms": {"count": len(deliveries), **summary_ms(deliveries)},
        "failures": {key: value for key, value in failures.items() if value},
        "samples": {"handshake_ms": handshakes, "delivery_ms": deliveries},
    }


def _without_samples(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "samples"}


async def _post(http: RawHttp, body: dict[str, Any], failures: Counter[str]) -> None:
    status, _ = await http.request("POST", "/v1/messages", body)
    if status != 202:
        failures[f"post_{status}"] += 1


async def setup(cluster: Cluster) -> tuple[list[str], str, str]:
    """The real users' tokens, and a token of another app allowed to publish (the flooder)."""
    tokens = await common.mint_tokens(cluster.ports["auth"], cluster.api_key, [f"probe-{i}" for i in range(5)])
    [receiver] = await common.mint_tokens(cluster.ports["auth"], cluster.api_key, ["probe-rx"])
    async with RawHttp("127.0.0.1", cluster.ports["auth"], cluster.admin_token, size=1) as admin:
        status, app = await admin.request("POST", "/v1/apps", {"name": "flooder"})
        assert status == 201, app
    async with RawHttp("127.0.0.1", cluster.ports["auth"], app["api_key"], size=1) as auth:
        status, body = await auth.request("POST", "/v1/tokens", {"user_id": "flood", "publish": ["user:*"]})
        assert status == 201, body
    return tokens, receiver, body["token"]


def run(args: argparse.Namespace) -> None:
    raise_file_limit()
    started = time.monotonic()
    with Cluster("abuse", push=1, env_extra=dict(args.setting)) as cluster:
        port = cluster.push_ports[0]
        tokens, receiver, flood_token = asyncio.run(setup(cluster))
        asyncio.run(probe(cluster, tokens, receiver, 2.0))  # warm-up: pools, caches
        attacks: dict[str, list[str]] = {
            "baseline": [],
            "bad_tokens": ["--attack", "bad_tokens", "--port", str(port), "--count", str(args.bad_tokens)],
            "slow_handshakes": ["--attack", "slow_handshakes", "--port", str(port), "--count", str(args.slow)],
            "publish_flood": ["--attack", "publish_flood", "--ws", cluster.ws_urls[0], "--token", flood_token],
            "baseline_after": [],
        }
        results: dict[str, dict[str, Any]] = {}
        for phase, attack in attacks.items():
            if phase not in args.phases:
                continue
            attacker = None
            if attack:
                window = str(RAMP_S + args.seconds + 1)
                progress(f"{phase}: attacking for {window} s")
                attacker = Proc(phase, common.python("abuse.py", *attack, "--seconds", window), pipes=True)
                time.sleep(RAMP_S)
            else:
                progress(f"{phase}: no abuse")
            pids = {name: cluster.procs[name].pid for name in ("auth", "mongo")}
            pids["push"] = cluster.procs[cluster.node_ids[0]].pid
            if attacker is not None:
                pids["attacker"] = attacker.pid
            # CPU seconds over the measured window: the attacker shares the machine's two
            # cores with what it attacks (and "machine" counts every process, others' too).
            cpu = common.CpuMeter(pids).start()
            result = asyncio.run(probe(cluster, tokens, receiver, args.seconds))
            result["cpu_s"] = cpu.stop()
            if attacker is not None:
                out, _ = attacker.popen.communicate(timeout=60)
                result["attack"] = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else None
                attacker.stop()
            result["push_rss_mib"] = round(common.rss_kb(cluster.procs[cluster.node_ids[0]].pid) / 1024, 1)
            results[phase] = result
            emit({"metric": "abuse", "phase": phase, "seconds": args.seconds, **_without_samples(result)})
            time.sleep(3.0)  # what the attack left behind is dropped before the next phase
    # The machine's other load moves the p99 of a quiet phase by itself: the baseline is the
    # samples of both quiet phases (before and after the attacks) when both ran.
    quiet = [phase for phase in ("baseline", "baseline_after") if phase in results]
    base = {
        kind: common.percentile([v for phase in quiet for v in results[phase]["samples"][kind]], 99)
        for kind in ("handshake_ms", "delivery_ms")
    }
    ratios = {
        phase: {kind: round(results[phase][kind]["p99"] / base[kind], 2) for kind in base}
        for phase in results
        if phase not in quiet
    }
    emit(
        {
            "metric": "abuse_summary",
            "baseline_p99_ms": {kind: round(value, 2) for kind, value in base.items()},
            "baseline_phases": quiet,
            "p99_over_baseline": ratios,
            "target": f"<= {TARGET_RATIO:g}x",
            "met": all(value <= TARGET_RATIO for phase in ratios.values() for value in phase.values()),
            "wall_s": round(time.monotonic() - started, 1),
            "settings": dict(args.setting),
            "machine": common.machine(),
            "versions": common.versions(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase (at most 120)")
    parser.add_argument("--bad-tokens", type=int, default=2000, help="concurrent made-up-token handshake loops")
    parser.add_argument("--slow", type=int, default=1000, help="slow-handshake sockets kept open")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        type=lambda raw: tuple(raw.split("=", 1)),
        help="HERALD_NAME=value for the services (repeatable), e.g. HERALD_MAX_HANDSHAKES=4000",
    )
    parser.add_argument(
        "--phases",
        type=lambda raw: raw.split(","),
        default=list(PHASES),
        help=f"some of {','.join(PHASES)} (comma-separated; baseline is always run)",
    )
    parser.add_argument("--attack", choices=("bad_tokens", "slow_handshakes", "publish_flood"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ws", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        attack_main(args)
        return
    args.seconds = min(max(args.seconds, 1.0), 120.0)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {', '.join(sorted(unknown))}")
    args.phases = ["baseline", *args.phases]
    if args.bad_tokens + args.slow > common.SOCKETS_PER_PROCESS:
        parser.error(f"at most {common.SOCKETS_PER_PROCESS} attacking sockets (the open-file limit)")
    with common.deadline(8 * args.seconds + 240, "the abuse benchmark"):
        run(args)


if __name__ == "__main__":
    main()
