"""Honest fake installed distributions for plugin tests: a ``*.dist-info`` folder plus modules on a path.

``importlib.metadata`` discovers them exactly as it discovers pip-installed ones once their folder is
on ``sys.path`` (in-process) or ``PYTHONPATH`` (subprocesses). Deleting the dist-info "uninstalls".
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path


def write_dist(root: Path, name: str, version: str, layers: dict[str, str], modules: dict[str, str] | None = None,
               datasets: dict[str, str] | None = None) -> Path:
    """Write distribution ``name`` ``version`` registering ``layers`` (type -> "module:Class") into ``root``.

    ``datasets`` (name -> "module:Class") registers dataset sources the same way. ``modules`` maps
    module names to source text, written next to it. Returns the dist-info folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{layer_type} = {value}\n" for layer_type, value in layers.items())
    sources = "".join(f"{dataset} = {value}\n" for dataset, value in (datasets or {}).items())
    (info / "entry_points.txt").write_text(f"[cnnkit.layers]\n{lines}" + (f"\n[cnnkit.datasets]\n{sources}" if sources else ""))
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return info


def subprocess_env(*paths: Path) -> dict[str, str]:
    """The current environment with ``paths`` first on PYTHONPATH and no colour or terminal width games."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


CNNKIT = [sys.executable, "-m", "cnnkit.cli"]

# A small, correct layer: y = factor * x, for provenance and listing tests.
SCALE_MODULE = '''
"""y = factor * x (a fake plugin layer for tests)."""
from cnnkit.layers import Layer, LayerParams


class Scale(Layer):
    class Params(LayerParams):
        factor: float = 2.0

    def forward(self, weights, x, train):
        f = x.dtype.type(self.params.factor)

        def backprop(dy):
            return dy * f, {}

        return x * f, backprop
'''

BROKEN_MODULE = '''
raise ImportError("this plugin is deliberately broken (needs libfoo 9)")
'''
