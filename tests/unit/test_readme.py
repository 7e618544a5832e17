from pathlib import Path

from herald.core.variables import VARIABLES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_variable_is_documented_with_its_default() -> None:
    for variable in VARIABLES:
        default = variable.default if variable.default is not None else "(unset)"
        assert f"| `{variable.name}` | {default} | {variable.meaning} |" in README, variable.name


def test_the_readme_shows_the_two_commands() -> None:
    assert "scripts/dev " in README and "scripts/test " in README
