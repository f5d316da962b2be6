"""The `cnnkit` command line: a thin Typer layer over the library.

Every cnnkit error becomes one line on stderr and exit code 1; usage errors exit 2 (Click's rule).
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import CnnkitError

app = typer.Typer(
    help="cnnkit: convolutional networks from JSON specs, trained with NumPy, shipped as one bundle.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}

SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a spec value: dotted.path=JSON, e.g. train.epochs=1 (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(*args, **kwargs):
    """app.command() that maps CnnkitError (and stray bugs) to one line on stderr and exit 1."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except KeyboardInterrupt:
                _fail("interrupted", 130)
            except CnnkitError as exc:
                if _state["debug"]:
                    raise
                _fail(str(exc))
            except Exception as exc:
                if _state["debug"]:
                    raise
                _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")

        return app.command(*args, **kwargs)(wrapper)

    return decorate


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False):
    _state["debug"] = debug


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# --------------------------------------------------------------------------------------------------
# Specs


@command()
def validate(spec: Path, set_: SetOption = None):
    """Check a spec file: structure, layer params, and shapes. Exit 0 if valid."""
    from .spec import load_spec, parameter_count, resolve_layers

    model_spec = load_spec(spec, set_ or [])
    resolved = resolve_layers(model_spec)
    params = sum(parameter_count(resolved))
    out = resolved[-1].output_shape
    typer.echo(f"ok: {spec} ({model_spec.name}): {len(resolved)} layers, {params:,} parameters, output {list(out)}")


@command()
def summary(spec: Path, set_: SetOption = None, json_: JsonOption = False):
    """Show each layer's type, output shape and parameter count."""
    from rich.table import Table

    from .spec import load_spec, parameter_count, resolve_layers

    model_spec = load_spec(spec, set_ or [])
    resolved = resolve_layers(model_spec)
    counts = parameter_count(resolved)
    rows = [
        {"index": r.index, "type": r.type, "output_shape": list(r.output_shape), "params": c, "provider": r.entry.provider}
        for r, c in zip(resolved, counts)
    ]
    if json_:
        typer.echo(json.dumps({"name": model_spec.name, "input_shape": model_spec.input.shape, "layers": rows, "total_params": sum(counts)}, indent=2))
        return
    table = Table(title=f"{model_spec.name}: input {model_spec.input.shape}")
    for col, justify in (("#", "right"), ("layer", "left"), ("output shape", "left"), ("params", "right")):
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(str(row["index"]), row["type"], str(row["output_shape"]), f"{row['params']:,}")
    table.add_section()
    table.add_row("", "total", "", f"{sum(counts):,}")
    _console().print(table)


# --------------------------------------------------------------------------------------------------
# Training


@command()
def run(
    spec: Path,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle to write (default: <spec name>.cnnkit).")] = None,
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines.")] = False,
):
    """Train the model a spec describes on its dataset and write a bundle."""
    from . import build
    from .bundle import save
    from .data import load_fashion_mnist
    from .train import fit, training_metadata

    from .spec import load_spec

    model_spec = load_spec(spec, set_ or [])
    target = out or Path(f"{model_spec.name}.cnnkit")
    if not target.parent.exists():
        raise CnnkitError(f"cannot write {target}: folder {target.parent} does not exist")
    model = build(model_spec)
    d = model_spec.data
    data = load_fashion_mnist(d.dir, d.train_limit, d.test_limit)
    model.classes = list(data.classes)
    say = (lambda msg: None) if quiet else typer.echo
    say(f"training {model_spec.name} on {len(data.train_labels):,} images from {data.source} "
        f"({model_spec.train.epochs} epochs, batch {model_spec.train.batch_size})")
    started = time.perf_counter()
    progress = None if quiet or not sys.stderr.isatty() else _progress_bar()
    try:
        if progress is not None:
            progress.start()
            task = progress.add_task("epoch 1", total=len(data.train_labels))

            def on_step(epoch, done, total, loss):
                progress.update(task, completed=done, description=f"epoch {epoch} loss {loss:.3f}")
        else:
            on_step = None

        def on_epoch(r):
            if progress is not None:
                progress.reset(task)
            say(f"epoch {r.epoch}: train loss {r.train_loss:.4f}, test accuracy {r.test_accuracy:.4f}, "
                f"macro-F1 {r.test_macro_f1:.4f} ({r.seconds:.1f}s)")

        history = fit(model, data, on_step=on_step, on_epoch=on_epoch)
    finally:
        if progress is not None:
            progress.stop()
    model.metadata = training_metadata(model, data, history)
    save(model, target)
    say(f"wrote {target} in {time.perf_counter() - started:.1f}s total")


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_console(stderr=True), transient=True)


# --------------------------------------------------------------------------------------------------
# Using bundles


@command()
def predict(
    bundle: Path,
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files, .npy arrays or IDX files.")],
    top: Annotated[int, typer.Option(min=1, help="Show the K most likely classes.")] = 1,
    invert: Annotated[bool, typer.Option(help="Invert pictures (Fashion-MNIST is light garments on black).")] = False,
    json_: JsonOption = False,
):
    """Classify images with a trained bundle: class name and probability."""
    import numpy as np

    from .bundle import load
    from .data import read_images

    model = load(bundle)
    shape = model.input_shape
    results = []
    for path in images:
        array = read_images(path, size=shape[-2:] if len(shape) == 3 else None, channels=shape[0] if len(shape) == 3 else 1, invert=invert)
        proba = model.predict_proba(array)
        for i, row in enumerate(proba):
            best = np.argsort(-row)[:top]
            name = str(path) if len(proba) == 1 else f"{path}[{i}]"
            results.append({"input": name, "top": [{"class": model.classes[j], "index": int(j), "probability": float(row[j])} for j in best]})
    if json_:
        typer.echo(json.dumps(results, indent=2))
        return
    for r in results:
        typer.echo(f"{r['input']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))


@command()
def evaluate(
    bundle: Path,
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the Fashion-MNIST IDX files (default: search).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images.")] = None,
    json_: JsonOption = False,
):
    """Accuracy and macro-F1 of a bundle on the Fashion-MNIST test set."""
    from .bundle import load
    from .data import load_fashion_mnist
    from .train import evaluate as evaluate_model

    model = load(bundle)
    data = load_fashion_mnist(data_dir, train_limit=1, test_limit=limit)
    scores = evaluate_model(model, data.test_images, data.test_labels)
    if json_:
        typer.echo(json.dumps({"examples": len(data.test_labels), **scores}))
        return
    typer.echo(f"{bundle}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f} on {len(data.test_labels):,} test images")


def main():
    app()


if __name__ == "__main__":
    main()
