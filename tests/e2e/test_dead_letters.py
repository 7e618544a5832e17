"""`herald dlq` against `herald dev`: its dead letters live in that process's memory, so the
command reaches them through dispatch's operator routes, with the token from its data."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.support.procs import Standalone


def herald_dlq(standalone: Standalone, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    env["HERALD_DATA_DIR"] = str(standalone.data_dir)
    dispatch = f"http://127.0.0.1:{standalone.port_base + 3}"
    return subprocess.run(
        [sys.executable, "-m", "herald.services.cli", "dlq", *args, "--url", dispatch],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_herald_dlq_lists_replays_and_drops_the_dead_letters_of_herald_dev(standalone: Standalone) -> None:
    listing = herald_dlq(standalone, "list")
    replayed = herald_dlq(standalone, "replay", "--all")
    dropped = herald_dlq(standalone, "drop", "--all")

    assert (listing.returncode, listing.stdout.strip()) == (0, "No dead letters."), listing.stderr
    assert replayed.stdout.strip() == "replayed 0 dead letters", replayed.stderr
    assert dropped.stdout.strip() == "dropped 0 dead letters", dropped.stderr


def test_replay_and_drop_want_ids_or_all(standalone: Standalone) -> None:
    refused = herald_dlq(standalone, "drop")

    assert refused.returncode == 1
    assert "--all" in refused.stderr


def test_the_dead_letter_routes_want_the_operator_token(standalone: Standalone) -> None:
    url = f"http://127.0.0.1:{standalone.port_base + 3}/v1/dead-letters"

    anonymous = httpx.get(url, timeout=10)
    operator = httpx.get(url, headers={"authorization": f"Bearer {standalone.admin_token}"}, timeout=10)

    assert anonymous.status_code == 401
    assert (operator.status_code, operator.json()) == (200, {"dead_letters": []})
