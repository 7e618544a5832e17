"""The documentation stands on its own: every relative link in the README, docs/ and the
clients' READMEs resolves inside the repository (the file, and the heading where a
#anchor is given), and docs/CONFIGURATION.md lists exactly the variables the settings read."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from herald.core.variables import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
# The clients' own READMEs, not those of the packages npm installs beside them (node_modules).
DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(p for p in (ROOT / "clients").glob("**/README.md") if "node_modules" not in p.parts),
    ]
)
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"
# HERALD_* names CONFIGURATION.md explains outside the settings: read by tools, not services.
NOT_SETTINGS = {"HERALD_APP_KEY", "HERALD_HTTP_PORT"}

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text links can be in: code blocks and code spans are examples, not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text())
    return _INLINE.findall(prose) + _REFERENCE.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text (links and code unwrapped), lower case,
    punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    seen: Counter[str] = Counter()
    found = set(_HTML_ANCHOR.findall(text))
    for heading in _HEADING.findall(text):
        base = slug(heading)
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in filter(_relative, links(doc)):
        where, _, anchor = target.partition("#")
        file = (doc.parent / where).resolve() if where else doc
        assert file.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert file.exists(), f"{doc.name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{doc.name}: no heading #{anchor} in {file.relative_to(ROOT)}"


def test_the_readme_is_the_front_door_to_every_doc() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md") if _relative(target)}

    for doc in (ROOT / "docs").glob("*.md"):
        assert doc.resolve() in linked, f"README.md does not link {doc.relative_to(ROOT)}"


def test_the_link_check_finds_what_it_should() -> None:
    """The checker itself, on text written for it."""
    text = "See [a](docs/A.md#two-words) and `[b](nowhere.md)`.\n```\n[c](nor-here.md)\n```\n[d]: other.md\n"
    prose = _prose(text)

    assert _INLINE.findall(prose) + _REFERENCE.findall(prose) == ["docs/A.md#two-words", "other.md"]
    assert slug("Two `words`, [linked](x.md)!") == "two-words-linked"


def _configuration_rows() -> dict[str, list[str]]:
    rows = {}
    for line in CONFIGURATION.read_text().splitlines():
        if line.startswith("| `HERALD_"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_setting_is_documented_with_its_default_and_who_reads_it() -> None:
    rows = _configuration_rows()

    for variable in VARIABLES:
        assert variable.name in rows, f"{variable.name} is missing from docs/CONFIGURATION.md"
        default, read_by, meaning = rows[variable.name]
        assert default == (variable.default if variable.default is not None else "(unset)"), variable.name
        assert read_by and meaning, variable.name


def test_the_configuration_documents_no_variable_the_settings_do_not_read() -> None:
    named = set(re.findall(r"HERALD_[A-Z0-9_]+", CONFIGURATION.read_text()))

    assert set(_configuration_rows()) <= {variable.name for variable in VARIABLES}
    assert named - NOT_SETTINGS <= {variable.name for variable in VARIABLES}
