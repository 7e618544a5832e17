"""clients/python is a distribution of its own: light (httpx and websockets, nothing of the
server), typed, and the very version the server depends on."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import herald_client

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of clients/python (the build leaves files behind)."""
    work = tmp_path_factory.mktemp("client-wheel")
    shutil.copytree(CLIENT, work / "src", ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(work / "src")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [path] = (work / "dist").glob("herald_client-*.whl")
    return zipfile.ZipFile(path)


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_the_wheel_depends_on_httpx_and_websockets_only(wheel: zipfile.ZipFile) -> None:
    requires = {Requirement(line).name for line in _metadata(wheel).get_all("Requires-Dist", [])}

    assert requires == {"httpx", "websockets"}


def test_the_wheel_is_typed_and_holds_the_client_package_only(wheel: zipfile.ZipFile) -> None:
    packages = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}

    assert packages == {"herald_client"}
    assert "herald_client/py.typed" in wheel.namelist()
    assert _metadata(wheel)["Version"] == herald_client.__version__


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    server_side = ["herald", "fastapi", "orjson", "pymongo", "aio_pika", "redis", "uvicorn", "prometheus_client"]
    probe = f"import sys, herald_client; print(sorted(m for m in sys.modules if m.split('.')[0] in {server_side!r}))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)

    assert loaded.stdout.strip() == "[]"


def test_the_server_depends_on_this_very_version_of_the_client() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [client] = [Requirement(d) for d in dependencies if Requirement(d).name == "herald-client"]

    assert str(client.specifier) == f"=={herald_client.__version__}"


def test_the_public_api_is_what_all_names() -> None:
    assert set(herald_client.__all__) == {
        "HeraldAPIError",
        "Operator",
        "Publisher",
        "Revoked",
        "Subscriber",
        "SubscriptionEnded",
        "TokenExpired",
        "TokenSource",
        "__version__",
    }
    assert all(hasattr(herald_client, name) for name in herald_client.__all__)
