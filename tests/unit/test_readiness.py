"""`/readyz`: a hard dependency down makes the service unready (503); a soft one it works
around only shows under `degraded`."""

from __future__ import annotations

from fastapi.testclient import TestClient

from herald.core.errors import Unavailable
from herald.web.api import create_api


async def _up() -> None:
    return None


async def _down() -> None:
    raise Unavailable("RabbitMQ unavailable: refused")


def test_ready_when_every_dependency_answers() -> None:
    client = TestClient(create_api("Herald t", "", checks=[_up], soft_checks={"bus": _up}))

    answer = client.get("/readyz")

    assert (answer.status_code, answer.json()) == (200, {"status": "ready", "degraded": []})


def test_a_soft_dependency_down_leaves_the_service_ready_but_says_it_is_degraded() -> None:
    client = TestClient(create_api("Herald t", "", checks=[_up], soft_checks={"directory": _up, "bus": _down}))

    answer = client.get("/readyz")

    assert (answer.status_code, answer.json()) == (200, {"status": "degraded", "degraded": ["bus"]})


def test_a_hard_dependency_down_makes_the_service_unready() -> None:
    client = TestClient(create_api("Herald t", "", checks=[_down], soft_checks={"bus": _up}))

    answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "unavailable"
