"""README's links into itself and into docs/*.md land on a heading (README once pointed at a checkpoint section that had been renamed)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces become '-'."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return found


def test_readme_links_to_sections_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/[\w.-]+\.md)?)#([\w-]+)\)", readme)
    assert links
    broken = [f"{page}#{anchor}" for page, anchor in links
              if anchor not in anchors((ROOT / page).read_text() if page else readme)]
    assert not broken, broken
