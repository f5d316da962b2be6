"""The `cnnkit` command line: a thin Typer layer over the library.

app.py holds the Typer ``app``, the ``command`` decorator, the shared option types and ``main``. The
commands live one group a module: specs.py (validate, summary, schema), training.py (run),
bundles.py (predict, evaluate, inspect, export), plugins.py (layers, check-layer, new-layer, datasets, check-source,
new-source), report.py (report, show) and serve.py (serve). Importing this package registers them all.
"""

from __future__ import annotations

from . import bundles, plugins, report, serve, specs, training  # noqa: F401 (each registers its commands)
from .app import app, main

# --help lists the commands in this order (the order of the single cli.py they came from), not in
# the order of the modules.
_ORDER = ("validate", "summary", "run", "predict", "evaluate", "serve", "report", "show", "export", "layers", "datasets", "schema",
          "check-layer", "new-layer", "check-source", "new-source", "inspect")


def _position(info) -> int:
    name = info.name or info.callback.__name__.replace("_", "-")
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


app.registered_commands.sort(key=_position)

__all__ = ["app", "main"]
