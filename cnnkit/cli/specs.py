"""`cnnkit validate`, `cnnkit summary` and `cnnkit schema`: what a spec is, before any training.

The work is done in cnnkit.spec, cnnkit.runtime.memory and cnnkit.spec.schema; these commands parse and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import CnnkitError
from .app import ForceOption, JsonOption, SetOption, _console, command


@command()
def validate(spec: Path, set_: SetOption = None):
    """Check a spec file: structure, layer params, and shapes. Exit 0 if valid."""
    from ..spec import load_spec, parameter_count

    model_spec = load_spec(spec, set_ or [])
    resolved = model_spec.layers
    params = sum(parameter_count(resolved))
    out = resolved[-1].output_shape
    typer.echo(f"ok: {spec} ({model_spec.name}): {len(resolved)} layers, {params:,} parameters, output {list(out)}")


@command()
def summary(spec: Path, set_: SetOption = None, json_: JsonOption = False):
    """Show each layer's type, output shape and parameter count."""
    from rich.table import Table

    from ..runtime.memory import estimate, human
    from ..spec import load_spec, parameter_count

    model_spec = load_spec(spec, set_ or [])
    resolved = model_spec.layers
    counts = parameter_count(resolved)
    mem = estimate(resolved)
    rows = [
        {"index": r.index, "type": r.type, "output_shape": list(r.output_shape), "params": c, "provider": r.entry.provider}
        for r, c in zip(resolved, counts)
    ]
    if json_:
        memory = {"train_bytes_per_image": mem.train_per_image, "inference_bytes_per_image": mem.inference_per_image,
                  "train_bytes_per_model": mem.per_model}
        typer.echo(json.dumps({"name": model_spec.name, "input_shape": model_spec.input.shape, "layers": rows, "total_params": sum(counts), "memory": memory}, indent=2))
        return
    table = Table(title=f"{model_spec.name}: input {model_spec.input.shape}")
    for col, justify in (("#", "right"), ("layer", "left"), ("output shape", "left"), ("params", "right")):
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(str(row["index"]), row["type"], str(row["output_shape"]), f"{row['params']:,}")
    table.add_section()
    table.add_row("", "total", "", f"{sum(counts):,}")
    _console().print(table)
    typer.echo(f"estimated memory per image: training {human(mem.train_per_image)}, inference {human(mem.inference_per_image)} "
               f"(a batch of {model_spec.train.batch_size} trains in about {human(mem.training_batch(model_spec.train.batch_size))})")


@command()
def schema(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    force: ForceOption = False,
):
    """Print the JSON Schema (draft-07) of a spec, including every installed layer type's params."""
    from ..bundle import write_atomic
    from ..bundle.atomic import check_target
    from ..spec.schema import spec_schema

    if out is not None:  # before the work, as for bundles: a regular file that is an earlier schema, or nothing
        out = check_target(out, force=force, recognise=_is_schema_file, what="cnnkit spec schema", example="schema.json")

    document, skipped = spec_schema()
    for status in skipped:
        typer.echo(f"note: {status.noun} {status.entry.type!r} left out of the schema: {status.error}", err=True)
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        try:
            write_atomic(out, text.encode("utf-8"))
        except OSError as exc:
            raise CnnkitError(f"cannot write {out}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {out}", err=True)


def _is_schema_file(path: Path) -> bool:
    """Whether ``path`` holds a schema `cnnkit schema` wrote (its "$id"), so it may be replaced."""
    from ..files import read_head
    from ..spec.schema import SCHEMA_ID

    return f'"$id": "{SCHEMA_ID}"'.encode() in read_head(path, 4096)
