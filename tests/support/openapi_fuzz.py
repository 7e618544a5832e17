"""Fuzz Herald's HTTP APIs from the OpenAPI documents they serve, with schemathesis.

One run per service: load its live ``/openapi.json``, generate requests from it (explicit
examples, coverage of boundaries and invalid values, random generation, and stateful
sequences that feed one response into the next request), send them over HTTP and check
every response against the same document. A run fails on any 5xx and on any response
whose status, content type, headers or body the document does not declare.

Credentials go by security scheme, as the document declares them: ``HTTPBearer`` (an
app's API key), ``OperatorToken`` (HERALD_ADMIN_TOKEN) and ``ServiceToken``
(HERALD_SERVICE_TOKEN). Each run gets an app of its own, so what it does to apps and keys
cannot lock the other run out.

Used by tests/fuzz (a small fixed budget in CI) and bench/fuzz.py (the long run).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

# What a response is held to: every check schemathesis has, but `max_response_time` (speed
# is for benchmarks) and `object_level_authorization` (it needs two identities per scheme).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")


@dataclass
class Target:
    """One service to fuzz: its base URL and a token per security scheme."""

    service: str
    base_url: str
    tokens: dict[str, str]


@dataclass
class FuzzReport:
    service: str
    operations: int = 0
    cases: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors and self.cases > 0

    def summary(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "cases": self.cases,
            "failures": len(self.failures),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 1),
            "statuses": dict(sorted(self.statuses.items())),
        }


def targets(auth_url: str, collect_url: str, admin_token: str, service_token: str) -> list[Target]:
    """auth and collect, each with a fresh app's key (created here through auth)."""
    keys = [_new_app_key(auth_url, admin_token, f"fuzz-{service}") for service in ("auth", "collect")]
    return [
        Target(
            "auth",
            auth_url,
            {"HTTPBearer": keys[0], "OperatorToken": admin_token, "ServiceToken": service_token},
        ),
        Target("collect", collect_url, {"HTTPBearer": keys[1]}),
    ]


def _new_app_key(auth_url: str, admin_token: str, name: str) -> str:
    response = httpx.post(
        f"{auth_url}/v1/apps", json={"name": name}, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()["api_key"]


def fuzz(
    target: Target,
    *,
    max_examples: int,
    seed: int,
    checks: tuple[str, ...] = CHECKS,
    phases: tuple[str, ...] = PHASES,
    max_time_s: int | None = None,
    request_timeout_s: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> FuzzReport:
    """Run schemathesis against one live service: each phase once, up to ``max_examples`` per
    operation. With ``max_time_s``, the fuzzing and stateful phases then go round again with
    new cases until that many seconds have passed (schemathesis's own ``max-time``)."""
    config = schemathesis.Config.from_dict(
        {
            "seed": seed,
            **({"max-time": max_time_s} if max_time_s else {}),
            "cache": {"enabled": False},  # replaying old crashes would make runs differ
            "request-timeout": request_timeout_s,
            "generation": {"max-examples": max_examples, "database": "none"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in checks}},
            "phases": {name: {"enabled": name in phases} for name in PHASES},
            "auth": {"openapi": {scheme: {"bearer": token} for scheme, token in target.tokens.items()}},
        }
    )
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json", config=config)
    report = FuzzReport(target.service, operations=schema.statistic.operations.total)
    statistic = Statistic()
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            statistic.on_scenario_finished(event.recorder)
            _count_statuses(report, event.recorder)
        elif isinstance(event, events.PhaseFinished) and progress is not None:
            progress(
                f"{target.service}: {event.phase.name.value} {event.status.value} after"
                f" {time.monotonic() - started:.0f} s, {statistic.total_cases} cases,"
                f" {statistic.total_failures} failures"
            )
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished) and event.stop_reason not in ("completed", "max_time"):
            report.errors.append(f"stopped: {event.stop_reason}")
    report.seconds = time.monotonic() - started
    report.cases = statistic.total_cases
    for label, groups in statistic.failures.items():
        for group in groups.values():
            for failure in group.failures:
                status = group.response.status_code if group.response is not None else None
                report.failures.append(
                    f"{label}: {failure.title} (status {status}): {failure.message.strip()}\n"
                    f"    {(group.code_sample or '').strip()}"
                )
    return report


def _count_statuses(report: FuzzReport, recorder: Any) -> None:
    for interaction in recorder.interactions.values():
        if interaction.response is not None:
            report.statuses[str(interaction.response.status_code)] += 1
