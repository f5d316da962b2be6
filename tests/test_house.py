"""The package's shape, read from its source with ast (nothing is imported): no import circles, no module
over 400 lines. Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import
hides a circle from the interpreter, not from the next reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnnkit"
MAX_LINES = 400


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package by its __init__.py)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports: the module an import names, or the submodule
    a ``from package import submodule`` names. The package's root (``from cnnkit import __version__``)
    does not count: its __init__ is the public face that imports everything."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(p for p in (base, node.module) if p)
            candidates = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        else:
            continue
        for target in candidates:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name and target != PACKAGE.name:
                targets.add(target)
    return targets


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (Tarjan's strongly connected components, size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 and not _package_and_its_module(group):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_and_its_module(group: list[str]) -> bool:
    """A package's __init__ and one of its own modules (it re-exports or dispatches to it; the module
    takes shared helpers from it): one unit, as python ../shared/tools/house.py counts it too."""
    return len(group) == 2 and any(b.startswith(a + ".") for a in group for b in group)


def test_the_checks_see_a_circle_and_a_long_module(tmp_path):
    package = tmp_path / "cnnkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("from .sub import b\nA = 1\n")
    (package / "sub" / "__init__.py").write_text("from .c import C\n")
    (package / "sub" / "c.py").write_text("from . import helper\nC = 3\n")  # a package and its own module: no circle
    (package / "sub" / "b.py").write_text("def late():\n    from ..a import A  # lazy: still a circle\n" + "\n" * MAX_LINES)
    known = modules(package)
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert graph["cnnkit.a"] == {"cnnkit.sub.b"} and graph["cnnkit.sub.b"] == {"cnnkit.a"} and graph["cnnkit.sub.c"] == {"cnnkit.sub"}
    assert circles(graph) == [["cnnkit.a", "cnnkit.sub.b"]]
    assert [name for name, path in known.items() if len(path.read_text().splitlines()) > MAX_LINES] == ["cnnkit.sub.b"]


def test_no_import_circles():
    """The torch backend's circle with the session is gone: PyTorch is a stepper inside the one loop."""
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert circles(graph) == []


def test_no_module_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
