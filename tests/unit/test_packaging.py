"""Herald installs its services under its own name (``herald.services``), never as a
top-level ``services`` package that another project could also claim."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def _package_of(folder: Path, package_dir: dict[str, str]) -> str:
    relative = folder.relative_to(ROOT).as_posix()
    for name, source in package_dir.items():
        if relative == source or relative.startswith(source + "/"):
            return name + relative[len(source) :].replace("/", ".")
    return relative.replace("/", ".")


def test_every_package_folder_is_installed() -> None:
    packages, package_dir = _declared()
    folders = {
        _package_of(init.parent, package_dir)
        for top in ("herald", "services")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert folders == set(packages)


def test_nothing_installs_as_a_top_level_services_package() -> None:
    packages, _ = _declared()
    assert all(name == "herald" or name.startswith("herald.") for name in packages)


def test_the_services_import_under_herald() -> None:
    from herald.services.push import main

    assert Path(main.__file__).resolve().parent == ROOT / "services" / "push"
