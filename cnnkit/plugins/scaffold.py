"""`cnnkit new-layer` and `cnnkit new-source`: write a ready-to-install plugin package from the
templates shipped in cnnkit (``cnnkit/templates/plugin`` for layers, ``cnnkit/templates/source`` for
dataset sources).

Each package has a pyproject.toml registering the plugin under its entry-point group, one module (a
working per-channel gain layer, or a CSV dataset source, to replace with your own), a README, and a
test running cnnkit's conformance kit. It installs and passes its tests as generated. Names that
would not make a working package are refused before anything is written: a distribution whose
package would shadow an installed module or distribution (``--dist cnnkit``, ``--dist numpy``), or
one that is not a Python identifier; a Python keyword as the plugin's own name gets a module name
with a trailing underscore (``class_.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from .. import __version__
from ..errors import CnnkitError

_LAYER_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_DIST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


def shadows_builtin(name: str, kind: str = "layer") -> bool:
    """Whether cnnkit itself provides a ``kind`` ("layer" or "source") named ``name``: the plain name
    then stays cnnkit's, a plugin's is usable only qualified."""
    if kind == "layer":
        from .registry import LAYERS as registry
    else:
        from ..data.sources import DATASETS as registry
    return any(entry.builtin for entry in registry.providers_of(name))


def compatible_cnnkit() -> str:
    """The cnnkit requirement a new plugin declares: this version up to the next release that may
    change the plugin contracts (the next minor before 1.0, the next major after), as
    plugins/cnnkit-extra does (``cnnkit>=0.1,<0.2``)."""
    major, minor = (int(part) for part in re.findall(r"\d+", __version__)[:2])
    upper = f"{major + 1}" if major >= 1 else f"0.{minor + 1}"
    return f"cnnkit>={__version__},<{upper}"


def module_name(name: str) -> str:
    """The Python module a plugin named ``name`` lives in: '-' -> '_', a keyword gets a trailing '_'."""
    module = name.replace("-", "_")
    return f"{module}_" if keyword.iskeyword(module) else module


def _package(dist: str) -> str:
    """The import package of distribution ``dist``, refused when it could not be imported or would shadow something installed."""
    package = re.sub(r"[-.]+", "_", dist).lower()
    if not package.isidentifier() or keyword.iskeyword(package):
        raise CnnkitError(f"--dist {dist!r} would make the package name {package!r}, which Python cannot import (a keyword, or starting with a digit); choose another --dist")
    try:
        installed = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None:
        raise CnnkitError(f"--dist {dist!r}: a distribution of that name is already installed ({installed.metadata['Name']} {installed.version}); "
                          f"installing the plugin would replace it. Choose another --dist, e.g. '{dist}-plugin'")
    spec = importlib.util.find_spec(package)
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "built in"
        raise CnnkitError(f"--dist {dist!r} would make the package {package!r}, but a module of that name is already importable ({where}); "
                          f"installing the plugin would shadow it. Choose another --dist, e.g. '{dist}-plugin'")
    return package


def _write(root: Path, template_folder: str, files: dict[str, str], values: dict[str, str]) -> Path:
    """Render ``files`` ({path in the package: template}) into the new folder ``root``, refusing an existing one."""
    out = root.parent
    if not out.is_dir():
        what = "is not a folder" if out.exists() else "does not exist"
        raise CnnkitError(f"cannot write the plugin: {out} {what}; --out names the folder to create the package in")
    if root.exists():
        raise CnnkitError(f"{root} already exists; refusing to overwrite it (choose another --out or --dist)")
    templates = resources.files("cnnkit") / "templates" / template_folder
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


def _values(name: str, dist: str) -> dict[str, str]:
    return {
        "name": name,
        "dist": dist,
        "package": _package(dist),
        "module": module_name(name),
        "cls": "".join(part.capitalize() for part in re.split(r"[-_]", name) if part) or "Plugin",
        "cnnkit_requirement": compatible_cnnkit(),
    }


# What each kind of plugin is named by, and where its templates and entry point go.
_KINDS = {
    "layer": (_LAYER_NAME, "layer type names are lowercase letters, digits and '_', starting with a letter (a Python identifier)", "plugin", "layer.py.tmpl", "test_layer.py.tmpl"),
    "source": (_SOURCE_NAME, "dataset source names are lowercase letters, digits, '-' and '_', starting with a letter", "source", "source.py.tmpl", "test_source.py.tmpl"),
}


def _new_plugin(kind: str, name: str, dist: str | None, out: str | Path) -> Path:
    pattern, rule, folder, module_template, test_template = _KINDS[kind]
    if not pattern.fullmatch(name):
        raise CnnkitError(f"{rule}. Received: {name!r}")
    dist = dist or f"cnnkit-{name.replace('_', '-')}"
    if not _DIST.fullmatch(dist):
        raise CnnkitError(f"--dist must be a valid distribution name (letters, digits, '.', '_', '-'). Received: {dist!r}")
    values = _values(name, dist)
    module, package = values["module"], values["package"]
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"{package}/__init__.py": "__init__.py.tmpl",
        f"{package}/{module}.py": module_template,
        f"tests/test_{module.rstrip('_')}.py": test_template,
    }
    return _write(Path(out) / dist, folder, files, values)


def new_layer(name: str, dist: str | None = None, out: str | Path = ".") -> Path:
    """Write the plugin package for layer type ``name`` into ``out/<dist>``; returns that folder.

    ``dist`` defaults to ``cnnkit-<name>``. Refuses to touch an existing folder.
    """
    return _new_plugin("layer", name, dist, out)


def new_source(name: str, dist: str | None = None, out: str | Path = ".") -> Path:
    """Write the plugin package for dataset source ``name`` into ``out/<dist>``; returns that folder.

    ``dist`` defaults to ``cnnkit-<name>``. Refuses to touch an existing folder.
    """
    return _new_plugin("source", name, dist, out)
