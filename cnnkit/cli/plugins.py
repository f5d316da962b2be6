"""`cnnkit layers`, `check-layer`, `new-layer`, `datasets`, `check-source` and `new-source`: the plugins.

The work is done in cnnkit.plugins.registry, cnnkit.plugins.layerdoc, cnnkit.testing and cnnkit.plugins.scaffold; these
commands parse and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import JsonOption, _console, _fail, command


@command()
def layers(
    json_: JsonOption = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown reference of every installed layer type (docs/LAYERS.md).")] = False,
):
    """List every layer type: provider distribution and version, and its params (or why it cannot load)."""
    from ..plugins.layerdoc import layer_rows, layers_markdown
    from ..plugins.registry import load_all

    statuses = load_all()
    if markdown:
        typer.echo(layers_markdown(statuses), nl=False)
        return
    rows = layer_rows(statuses)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_plugins("cnnkit layer types", "type", rows)


@command()
def datasets(json_: JsonOption = False):
    """List every dataset source: provider distribution and version, and its params (or why it cannot load)."""
    from ..data import DATASETS
    from ..plugins.layerdoc import layer_rows

    rows = layer_rows(DATASETS.load_all())
    for row in rows:
        row["dataset"] = row.pop("type")
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_plugins("cnnkit dataset sources", "dataset", rows)


def _print_plugins(title: str, first: str, rows: list[dict]) -> None:
    """The table of `cnnkit layers` and `cnnkit datasets`: name, provider, params (or the error, the conflict)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for col in (first, "provider", "params"):
        table.add_column(col, overflow="fold")
    for row in rows:
        if "error" in row:
            params = f"[red]cannot be used: {escape(row['error'])}[/red]"
        else:
            params = "\n".join(_describe_param(p) for p in row["params"]) or "-"
        if "conflict" in row:
            params = f"[yellow]conflict: {escape(row['conflict'])}[/yellow]\n{params}"
        table.add_row(row[first], f"{row['dist']} {row['version']}", params)
    _console().print(table)


def _describe_param(p: dict) -> str:
    from rich.markup import escape

    default = "required" if p["required"] else f"default {json.dumps(p.get('default'))}"
    return escape(f"{p['name']}: {p['type']} ({default})")


def _params_option(params: str | None) -> dict:
    """--params as a dict; anything else is a usage error (exit 2)."""
    try:
        fields = json.loads(params) if params is not None else {}
    except json.JSONDecodeError as exc:
        _fail(f"--params is not valid JSON ({exc.msg} at column {exc.colno}). Received: {params}", 2)
    if not isinstance(fields, dict):
        _fail(f"--params must be a JSON object. Received: {params}", 2)
    return fields


def _shape_option(input_shape: str | None) -> tuple[int, ...] | None:
    """--input-shape as a tuple of positive ints (None when not given); anything else is a usage error."""
    if input_shape is None:
        return None
    try:
        shape = tuple(int(d) for d in input_shape.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        _fail(f"--input-shape must be positive integers separated by commas, like 3,8,8. Received: {input_shape}", 2)
    return shape


def _run_kit(command_name: str, what: str, params: str | None, input_shape: str | None, run) -> None:
    """check-layer and check-source: parse the options, run the kit, print a line per check, then ok
    or the failed checks (exit 1). Params the plugin refuses, or an input shape it cannot take, are
    usage errors (exit 2)."""
    from ..errors import SpecError

    fields, shape = _params_option(params), _shape_option(input_shape)
    try:
        used, results = run(what, fields, shape)
    except SpecError as exc:
        _fail(str(exc), 2)
    typer.echo(f"{command_name} {what} params={json.dumps(fields)} input_shape={list(used) if used else None}")
    for r in results:
        typer.echo(f"  {r.status.upper():4}  {r.name}: {r.detail}")  # NOTE: worth knowing, not a failure
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        typer.echo(f"error: {what}: {len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {what} passed {sum(r.status == 'pass' for r in results)} checks")


ParamsOption = Annotated[Optional[str], typer.Option("--params", help='Params as a JSON object, e.g. \'{"filters": 4, "kernel_size": 3}\' for a layer, \'{"path": "data"}\' for a source.')]


@command("check-layer")
def check_layer(
    layer_type: Annotated[str, typer.Argument(metavar="TYPE", help="A registered layer type (cnnkit layers lists them).")],
    params: ParamsOption = None,
    input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="Per-sample input shape C,H,W (or F for flat layers). Default: 3,8,8, else 12.")] = None,
):
    """Run the conformance checks on a layer type; exit 1 if any fails."""
    from ..testing import run_checks

    _run_kit("check-layer", layer_type, params, input_shape, run_checks)


@command("check-source")
def check_source(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A registered dataset source (cnnkit datasets lists them).")],
    params: ParamsOption = None,
    input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="The spec's input.shape C,H,W to load for. Default: the shape of the arrays the source gives.")] = None,
):
    """Run the conformance checks on a dataset source (loads its data); exit 1 if any fails."""
    from ..testing import run_source_checks

    _run_kit("check-source", name, params, input_shape, run_source_checks)


DistOption = Annotated[Optional[str], typer.Option("--dist", help="Distribution (pip) name. Default: cnnkit-NAME.")]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder to create the package in.")]


def _wrote(root: Path, name: str, kind: str, check: str) -> None:
    """What new-layer and new-source print: where the package is, how to install and check it, and a
    warning when cnnkit itself has a plugin of that name (the plain name stays cnnkit's)."""
    from ..plugins.scaffold import shadows_builtin

    typer.echo(f"wrote {root}: pip install -e {root} && {check}")
    if shadows_builtin(name, kind):
        noun = "layer type" if kind == "layer" else "dataset source"
        typer.echo(f"warning: {name!r} is a built-in cnnkit {noun}: a spec writing \"{name}\" gets cnnkit's; "
                   f"yours is usable only qualified, \"{root.name}:{name}\"", err=True)


@command("new-layer")
def new_layer(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The layer type, e.g. my_gain (a spec writes it as \"type\").")],
    dist: DistOption = None,
    out: OutOption = Path("."),
):
    """Write a ready layer plugin package: pyproject with the entry point, one layer file, README, a test."""
    from ..plugins.scaffold import new_layer as write_plugin

    root = write_plugin(name, dist, out)
    _wrote(root, name, "layer", f"cnnkit check-layer {root.name}:{name}")


@command("new-source")
def new_source(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The dataset source's name, e.g. csv-pixels (a spec writes it as data.dataset).")],
    dist: DistOption = None,
    out: OutOption = Path("."),
):
    """Write a ready dataset-source plugin package: pyproject with the entry point, one source file (CSV), README, a test."""
    from ..plugins.scaffold import new_source as write_plugin

    root = write_plugin(name, dist, out)
    _wrote(root, name, "source", f"cnnkit check-source {root.name}:{name} --params '{{\"path\": \"...\"}}' --input-shape 1,28,28")
