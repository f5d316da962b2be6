"""mkdocs hooks (mkdocs.yml ``hooks:``): the site's home page is README.md, and the command-line
page gets the reference Typer renders from the `cnnkit` app, so neither can drift from its source.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
CLI_REFERENCE = "<!-- the reference of every command, rendered from the Typer app by tools/docs_hooks.py -->"


def on_files(files, config):
    """README.md becomes index.md; its links into docs/ become links between pages of the site."""
    home = re.sub(r"\]\(docs/", "](", (ROOT / "README.md").read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=home))
    return files


def on_page_markdown(markdown, page, config, files):
    if CLI_REFERENCE in markdown:
        markdown = markdown.replace(CLI_REFERENCE, cli_reference())
    return markdown


def cli_reference() -> str:
    """`typer cnnkit.cli utils docs`, two heading levels down (it sits under the page's "Reference")."""
    done = subprocess.run([sys.executable, "-m", "typer", "cnnkit.cli", "utils", "docs", "--name", "cnnkit"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"typer could not render the cnnkit command reference: {done.stderr.strip()[-2000:]}")
    return re.sub(r"^(#+) ", r"##\1 ", done.stdout, flags=re.M)
