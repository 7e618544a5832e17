"""A webhook retry outlives the dispatch process that scheduled it: dispatch is killed (kill
-9) after each failed attempt and started again, and the next attempt still comes, with the
same delivery id and a fresh valid signature, until the receiver takes it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from herald.messaging import webhooks
from herald.ops.metrics import sample
from herald_client import Operator, Publisher
from tests.cluster.conftest import Cluster, start_cluster
from tests.ha.conftest import report
from tests.support.cleanup import drop_namespace
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.ha

CONFIG_CACHE_S = 2.2  # services cache an app's config for up to 2 s


async def _requests(receiver: Receiver, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(receiver.requests)} webhook attempts arrived, {count} expected")
        await asyncio.sleep(0.01)


async def _retry_scheduled(cluster: Cluster, timeout_s: float = 30) -> None:
    """Wait until the running dispatch has put a failed attempt's retry in RabbitMQ (its
    ``herald_webhooks_total{outcome="retried"}``; a restarted dispatch counts from 0)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            metrics = (await http.get(f"{cluster.url('dispatch')}/metrics")).text
            if sample(metrics, "herald_webhooks_total", 'outcome="retried"') >= 1:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dispatch scheduled no retry in {timeout_s}s:\n{cluster.logs()}")
            await asyncio.sleep(0.01)


@pytest.mark.timeout(300)
async def test_a_retry_survives_dispatch_being_killed_between_attempts(
    amqp_url: str, redis_url: str, mongo_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(script=[500, 503], then=200)
    await receiver.start()
    herald = start_cluster(tmp_path, amqp_url, redis_url, mongo_url)
    kills = 0
    try:
        async with Operator(herald.url("auth"), herald.env["HERALD_ADMIN_TOKEN"]) as operator:
            app = await operator.create_app("webhook-restart")
            secret = (await operator.configure(app["app_id"], webhook_url=receiver.url))["webhook_secret"]
        await asyncio.sleep(CONFIG_CACHE_S)
        async with Publisher(herald.url("auth"), herald.url("collect"), app["api_key"]) as publisher:
            await publisher.join("ops", "ann")  # announces group.joined

        for failed_attempts in (1, 2):
            await _requests(receiver, failed_attempts)
            # The attempt failed; once its retry is waiting in RabbitMQ, not in this process:
            await _retry_scheduled(herald)
            herald.processes["dispatch"].signal(signal.SIGKILL)
            herald.processes.pop("dispatch").stop()
            kills += 1
            await asyncio.sleep(1.0)  # the retry's delay passes while no dispatch runs
            herald.start("dispatch")
        await _requests(receiver, 3)
        await asyncio.sleep(1.0)  # nothing more should come: the third attempt was taken

        attempts = receiver.requests
        ids = {request.headers["x-herald-delivery"] for request in attempts}
        line = (
            f"webhook retries: {len(attempts)} attempts (500, 503, 200) across {kills} kills of dispatch; "
            f"delivery ids {len(ids)}"
        )
        report(line)
        assert len(attempts) == 3, line
        assert len(ids) == 1, line
        assert all(request.body == attempts[0].body for request in attempts), line
        assert all(webhooks.verify(secret, r.body, r.headers["x-herald-signature"]) for r in attempts), line
        assert attempts[0].headers["x-herald-event"] == "group.joined", line
    finally:
        codes = herald.stop_all()
        await drop_namespace(herald.namespace, amqp_url=amqp_url, redis_url=redis_url, mongo_url=mongo_url)
        await receiver.close()
    assert all(code == 0 for code in codes.values()), f"exit codes on SIGTERM: {codes}"
