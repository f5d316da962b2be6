"""The README is a front door whose links all land, and the guides in docs/ point at things that exist.

README once pointed at a checkpoint section that had been renamed, and the guides named modules
that had moved; these checks need no site build (`make docs` builds it strictly in CI).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub and mkdocs make them: lower case, punctuation other than '-' and '_' dropped, spaces become '-'."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file does not exist, or whose #anchor is not a heading of it."""
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text())):
            broken.append(target)
    return broken


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for command in ("make run", "make test"):
        assert f"{command} " in readme
    linked = {Path(t.partition("#")[0]).name for t in links(readme)}
    assert {p.name for p in PAGES} - {"api.md", "cli.md"} <= linked | {"index.md"}, "a guide the README does not name"


def test_readme_links_land_on_a_file_and_a_heading():
    readme = ROOT / "README.md"
    assert links(readme.read_text())
    assert broken_links(readme) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_between_guides_land(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=["README.md", *(p.name for p in PAGES)])
def test_files_the_docs_name_exist(page):
    """`cnnkit/runtime/tuning.py`, `specs/examples/npz.json`, snippets included into a page: all there."""
    named = re.findall(r"\b((?:cnnkit|tests|tools|plugins|specs|docs)/[\w./-]*\w\.(?:py|json|mjs|sh|toml|md|png))\b", page.read_text())
    missing = sorted({n for n in named if not (ROOT / n).exists()})
    assert missing == []


def test_every_guide_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r"^ *- [^:#]+: (\S+\.md)", nav, flags=re.M))
    assert {p.name for p in PAGES} <= listed
