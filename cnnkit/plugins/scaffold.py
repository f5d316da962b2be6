"""`cnnkit new-layer`: write a ready-to-install layer plugin package from the templates shipped in cnnkit.

The package has a pyproject.toml registering the layer under the `cnnkit.layers` entry points, one
layer file (a working per-channel gain to replace with your math), a README, and a test running
cnnkit's conformance kit. It installs and passes its tests as generated.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from .. import __version__
from ..errors import CnnkitError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_DIST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


def shadows_builtin(name: str) -> bool:
    """Whether cnnkit itself provides layer type ``name``: the plain name then stays cnnkit's, a plugin's is usable only qualified."""
    from .registry import providers_of

    return any(entry.builtin for entry in providers_of(name))


def new_layer(name: str, dist: str | None = None, out: str | Path = ".") -> Path:
    """Write the plugin package for layer type ``name`` into ``out/<dist>``; returns that folder.

    ``dist`` defaults to ``cnnkit-<name>``. Refuses to touch an existing folder.
    """
    if not _NAME.fullmatch(name):
        raise CnnkitError(f"layer type names are lowercase letters, digits and '_', starting with a letter (a Python identifier). Received: {name!r}")
    dist = dist or f"cnnkit-{name.replace('_', '-')}"
    if not _DIST.fullmatch(dist):
        raise CnnkitError(f"--dist must be a valid distribution name (letters, digits, '.', '_', '-'). Received: {dist!r}")
    package = re.sub(r"[-.]+", "_", dist).lower()
    values = {
        "name": name,
        "dist": dist,
        "package": package,
        "cls": "".join(part.capitalize() for part in name.split("_") if part) or "Layer",
        "cnnkit_version": __version__,
    }
    out = Path(out)
    if not out.is_dir():
        what = "is not a folder" if out.exists() else "does not exist"
        raise CnnkitError(f"cannot write the plugin: {out} {what}; --out names the folder to create the package in")
    root = out / dist
    if root.exists():
        raise CnnkitError(f"{root} already exists; refusing to overwrite it (choose another --out or --dist)")
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{package}/__init__.py": "__init__.py.tmpl",
        f"{package}/{name}.py": "layer.py.tmpl",
        f"tests/test_{name}.py": "test_layer.py.tmpl",
    }
    templates = resources.files("cnnkit") / "templates" / "plugin"
    rendered = {path: Template((templates / template).read_text(encoding="utf-8")).substitute(values) for path, template in files.items()}
    try:
        root.mkdir()
        for path, text in rendered.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CnnkitError(f"cannot write {root}: {exc.strerror or exc}") from None
    return root
