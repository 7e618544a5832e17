"""Poison on the dispatch queue of a cluster of processes: the bodies dispatch can never
route are dead-lettered after the delivery limit while the messages behind them flow, and
the operator sees them, re-drives them and drops them with ``herald dlq``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest

from herald.core import codec
from herald.core.names import Names
from herald.ops.metrics import sample
from herald_client import Operator, Publisher
from tests.cluster.conftest import start_cluster
from tests.ha.conftest import report
from tests.support.cleanup import drop_namespace
from tests.support.traffic import produce, subscribe, users

pytestmark = pytest.mark.ha

LIMIT = 3


def herald_dlq(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "herald.services.cli", "dlq", *args],
        env={**env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def until_listed(env: dict[str, str], count: int, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        listing = await asyncio.to_thread(herald_dlq, env, "list")
        if listing.startswith(f"{count} dead letter"):
            return listing
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} dead letters, `herald dlq list` says:\n{listing}")
        await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_poison_is_parked_after_the_limit_while_the_rest_flows_and_herald_dlq_handles_it(
    amqp_url: str, redis_url: str, mongo_url: str, tmp_path: Path
) -> None:
    herald = start_cluster(tmp_path, amqp_url, redis_url, mongo_url, HERALD_DELIVERY_LIMIT=str(LIMIT))
    env = {**herald.env}
    try:
        async with Operator(herald.url("auth"), herald.env["HERALD_ADMIN_TOKEN"]) as operator:
            app = await operator.create_app("poison")
        poisoned_id = f"poisoned-{uuid.uuid4().hex[:8]}"
        poison = [
            b"this is not a dispatch batch",
            # Readable, but its channel is nothing dispatch can route.
            codec.encode_batch([{"id": poisoned_id, "app": app["app_id"], "channel": "nowhere", "offset": 1}]),
        ]
        queue = Names(herald.namespace).work_queues("quorum").dispatch
        async with Publisher(herald.url("auth"), herald.url("collect"), app["api_key"]) as publisher:
            people = users(10)
            audience = await subscribe(publisher, {user: [herald.ws_url("push-a")] for user in people})
            try:
                connection = await aio_pika.connect(amqp_url, timeout=5)
                async with connection:
                    channel = await connection.channel()
                    exchange = await channel.get_exchange(Names(herald.namespace).dispatch_exchange)
                    for body in poison:
                        await exchange.publish(aio_pika.Message(body), routing_key=queue)
                tally = await produce(publisher, people, rate=100, seconds=3)
                await audience.wait_for(tally, 30)
                summary = audience.report(tally)
                assert not audience.missing(tally), f"messages behind the poison: {summary}\n{herald.logs()}"

                listing = await until_listed(env, 2)
                async with httpx.AsyncClient(timeout=10) as http:
                    metrics = (await http.get(f"{herald.url('dispatch')}/metrics")).text
                parked = sample(metrics, "herald_dead_lettered_total", 'queue="dispatch"')
                dispatch_log = herald.processes["dispatch"].log_tail(400)
                report(f"dead letters: 2 poison bodies parked after {LIMIT + 1} deliveries each; behind them {summary}")
                assert "unreadable, 28 bytes" in listing and poisoned_id in listing, listing
                rows = [line.split()[:4] for line in listing.splitlines()[2:]]
                assert [row[1:] for row in rows] == [["dispatch", "delivery_limit", str(LIMIT + 1)]] * 2, listing
                assert parked == 2, metrics
                assert "dead-lettered" in dispatch_log and poisoned_id in dispatch_log, dispatch_log

                # The operator re-drives one (still poison: it comes back), then drops both.
                letter_id = next(line.split()[0] for line in listing.splitlines() if poisoned_id in line)
                assert herald_dlq(env, "replay", letter_id).strip() == "replayed 1 dead letter"
                await until_listed(env, 2)
                assert herald_dlq(env, "drop", "--all").strip() == "dropped 2 dead letters"
                assert herald_dlq(env, "list").strip() == "No dead letters."
            finally:
                await audience.close()
    finally:
        codes = herald.stop_all()
        await drop_namespace(herald.namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url)
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"
