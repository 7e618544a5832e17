"""The JavaScript client's own tests, run by Node's test runner as part of this suite: a
fake node speaking the refresh frames, `herald dev` as a process (connect, ack, publish,
clean close, resume after a restart, in-band refresh), `npm pack` and the TypeScript
declarations. Skipped, saying why, only where node is not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the JS client's tests need Node 20+")


@pytest.mark.timeout(600)
def test_the_js_client_passes_its_node_tests() -> None:
    assert NODE is not None
    missing = [name for name in ("ws", "typescript") if not (JS / "node_modules" / name).is_dir()]
    assert not missing, f"clients/js/node_modules lacks {missing}: scripts/test installs them (npm install)"
    files = sorted(str(path.relative_to(JS)) for path in (JS / "test").glob("*.test.js"))
    herald = Path(sys.executable).parent / "herald"

    run = subprocess.run(
        # Every file at once (Node's default is one at a time on a 2-core machine): the package
        # checks and the fake node's tests run while the end-to-end file waits on its server.
        [NODE, "--test", f"--test-concurrency={len(files)}", "--test-reporter=spec", *files],
        cwd=JS,
        env={**os.environ, "HERALD_BIN": str(herald)},
        capture_output=True,
        text=True,
        timeout=540,
    )

    assert run.returncode == 0, f"node --test failed:\n{run.stdout[-20000:]}\n{run.stderr[-5000:]}"
    passed = re.search(r"\bpass (\d+)\n", run.stdout)
    assert passed and int(passed.group(1)) > 0, f"node --test ran no test:\n{run.stdout[-2000:]}"
