"""The `cnnkit` command line: a thin Typer layer over the library.

Every cnnkit error becomes one line on stderr and exit code 1; usage errors exit 2 (Click's rule).
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_report import register_report_commands, run_report
from .errors import CnnkitError, CnnkitWarning

app = typer.Typer(
    help="cnnkit: convolutional networks from JSON specs, trained with NumPy, shipped as one bundle.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}

SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a spec value: dotted.path=JSON, e.g. train.epochs=1 (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AllowMismatchOption = Annotated[
    bool, typer.Option("--allow-provider-mismatch", help="Load even if another distribution than the bundle recorded provides a layer type (a warning says which).")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing file that is not ours, or is read-only.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temp files are removed on the way out."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(*args, **kwargs):
    """app.command() that maps CnnkitError (and stray bugs) to one line on stderr and exit 1."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", CnnkitWarning)
                    warnings.showwarning = _show_warning
                    return fn(*a, **kw)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except KeyboardInterrupt as exc:
                from .bundle import InterruptedAfterWrite

                code = 143 if isinstance(getattr(exc, "signal_exception", exc), Terminated) else 130
                what = "terminated (SIGTERM)" if code == 143 else "interrupted"
                if isinstance(exc, InterruptedAfterWrite):
                    _fail(f"{what} just after {exc.path} was written completely; it is a whole, valid file", code)
                _fail(what, code)
            except BrokenPipeError:
                # The reader went away (`cnnkit layers --json | head`): stop quietly, as Unix tools do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(1) from None
            except CnnkitError as exc:
                if _state["debug"]:
                    raise
                _fail(str(exc))
            except Exception as exc:
                if _state["debug"]:
                    raise
                _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

        return app.command(*args, **kwargs)(wrapper)

    return decorate


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """cnnkit's own warnings as one line on stderr ("warning: ..."); others as Python shows them."""
    if issubclass(category, CnnkitWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


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

    from .memory import estimate, human
    from .spec import load_spec, parameter_count, resolve_layers

    model_spec = load_spec(spec, set_ or [])
    resolved = resolve_layers(model_spec)
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


# --------------------------------------------------------------------------------------------------
# Training


@command()
def run(
    spec: Annotated[Optional[Path], typer.Argument(help="The spec to train (not with --resume).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Bundle to write (default: <spec name>.cnnkit).")] = None,
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines (warnings are still shown).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 1, no bundle written) when training ends with a warning.")] = False,
    run_dir: Annotated[Path, typer.Option("--run-dir", envvar="CNNKIT_RUN_DIR", help="Where run folders go: DIR/<name>, DIR/<name>-2, ...")] = Path("runs"),
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Go on from a run folder's last checkpoint (e.g. runs/<name>).")] = None,
    force: ForceOption = False,
    backend: Annotated[str, typer.Option("--backend", help="numpy (default) or torch (PyTorch; DistributedDataParallel under torchrun).")] = "numpy",
    device: Annotated[str, typer.Option("--device", help="With --backend torch: cpu, cuda or mps.")] = "cpu",
):
    """Train the model a spec describes on its dataset; write a bundle and a run folder (spec, history.csv, checkpoints)."""
    import warnings

    import numpy as np

    from . import build, memory
    from .bundle import check_output, estimated_size
    from .data import load_fashion_mnist
    from .spec import load_spec, parameter_count, resolve_layers
    from .train import TrainingWarning, final_summary
    from .train.loop import Interrupted
    from .train.progress import Progress
    from .train.runfolder import resume_run, save_final, start_run, stop_on_signals, train_in_folder

    if backend not in ("numpy", "torch"):
        raise CnnkitError(f"--backend must be numpy or torch. Received: {backend!r}")
    if backend == "numpy" and device != "cpu":
        raise CnnkitError(f"--device {device} needs --backend torch (the NumPy backend runs on the CPU)")
    if backend == "torch" and strict:  # the torch backend does not check training health: --strict would pass anything
        raise CnnkitError("--strict works with the NumPy backend only; the torch backend does not check training health yet")
    if backend == "torch" and resume is not None:
        raise CnnkitError("--resume works with the NumPy backend only; the torch backend writes no run folder")
    if (spec is None) == (resume is None):
        _fail("give a spec to train, or --resume RUN_FOLDER to go on with a run (not both)", 2)
    if resume is not None:
        model, state = resume_run(resume, set_ or [])
        model_spec = model.spec
    else:
        model_spec, state = load_spec(spec, set_ or []), None
    resolved = model.layers if resume is not None else resolve_layers(model_spec)
    # Checked before training, so a bad --out or a batch that cannot fit costs no training time.
    target = check_output(out or f"{model_spec.name}.cnnkit", force=force, size_hint=estimated_size(sum(parameter_count(resolved))))
    # A batch never holds more than the training set: train_limit caps it (batch 100000 of 200 images is 200).
    too_big = memory.batch_fits(memory.estimate(resolved), min(model_spec.train.batch_size, model_spec.data.train_limit or model_spec.train.batch_size))
    if too_big:
        raise CnnkitError(too_big)
    if backend == "torch":
        from .backends.torch import run_spec

        return run_spec(model_spec, target, device, say=(lambda msg: None) if quiet else typer.echo, force=force)
    d = model_spec.data
    data = load_fashion_mnist(d.dir, d.train_limit, d.test_limit)
    if resume is None:
        model = build(model_spec)
        model.classes = list(data.classes)
        folder = start_run(run_dir, model_spec.name, model_spec.to_dict())
    else:
        folder = resume
    say = (lambda msg: None) if quiet else typer.echo
    held = d.validation if d.validation is None or isinstance(d.validation, int) else f"{d.validation:.0%}"
    if state is None:
        where = f"run folder {folder}"
    elif state.stopped or state.epoch > model_spec.train.epochs:  # nothing left to train: only the bundle is written
        where = f"{folder} finished {'early, at epoch ' + str(state.epoch - 1) if state.stopped else 'all its epochs'}; writing its bundle"
    else:
        where = f"resuming {folder} at epoch {state.epoch}, step {state.step}"
    say(f"training {model_spec.name} on {len(data.train_labels):,} images from {data.source}{'' if held is None else f' ({held} held out for validation)'} "
        f"({model_spec.train.epochs} epoch{'s' if model_spec.train.epochs != 1 else ''}, batch {model_spec.train.batch_size}); {where}")
    started = time.perf_counter()
    progress = Progress(say, not quiet and sys.stderr.isatty(), model_spec.train.epochs, model_spec.train.batch_size)
    try:
        # A diverging run overflows float32 on the way to its one-line "diverged" error; numpy's
        # warnings about that would only clutter the terminal. Training warnings are printed below.
        with progress, stop_on_signals() as stop_requested, np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", TrainingWarning)
            hooks = train_in_folder(model, data, folder, state=state, stop_requested=stop_requested,
                                    on_step=progress.on_step, on_epoch=progress.on_epoch, out=target)
    except Interrupted as exc:
        _fail(str(exc), 130)
    summary = final_summary(model.metadata)  # with a validation split: the test scores, scored once
    if summary:
        say(summary)
    found = model.metadata.get("warnings", [])
    for message in found:
        typer.echo(f"warning: {message}", err=True)
    if strict and found:
        _fail(f"--strict: training ended with {len(found)} warning{'s' if len(found) > 1 else ''}; no bundle written")
    save_final(model, target, folder, force=force)
    problem = run_report(model, data, folder, target)
    if problem:
        typer.echo(f"warning: {problem}", err=True)
    written = f" (checkpoint {hooks.checkpoint_bytes:,} bytes, {hooks.checkpoint_seconds:.3f}s to write)" if hooks.checkpoint_bytes else ""
    say(f"wrote {target} and {folder}/ in {time.perf_counter() - started:.1f}s total{written}")


# --------------------------------------------------------------------------------------------------
# Using bundles


@command()
def predict(
    bundle: Path,
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files, .npy arrays or IDX files.")],
    top: Annotated[int, typer.Option(min=1, help="Show the K most likely classes.")] = 1,
    invert: Annotated[bool, typer.Option(help="Invert pictures (Fashion-MNIST is light garments on black).")] = False,
    background: Annotated[int, typer.Option(min=0, max=255, help="Gray level (after --invert) that transparent pixels become; Fashion-MNIST's is 0, black.")] = 0,
    frame: Annotated[Optional[int], typer.Option(min=0, help="Which frame of an animated image to classify (0 = first); required for animated images.")] = None,
    json_: JsonOption = False,
    allow_provider_mismatch: AllowMismatchOption = False,
):
    """Classify images with a trained bundle: class name and probability."""
    import numpy as np

    from .bundle import load
    from .data import read_images

    model = load(bundle, allow_provider_mismatch=allow_provider_mismatch)
    shape = model.input_shape
    results = []
    for path in images:
        array = read_images(path, size=shape[-2:] if len(shape) == 3 else None, channels=shape[0] if len(shape) == 3 else 1, invert=invert,
                            background=background, frame=frame, warn=lambda message: typer.echo(f"warning: {message}", err=True))
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
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the Fashion-MNIST IDX files (default: the bundle spec's data.dir, else search).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images.")] = None,
    json_: JsonOption = False,
    allow_provider_mismatch: AllowMismatchOption = False,
):
    """Per-class precision, recall, F1 and support, their averages and the confusion matrix of a bundle on the test set."""
    from .bundle import load
    from .data import load_fashion_mnist
    from .evaluation import evaluate_model, format_report

    model = load(bundle, allow_provider_mismatch=allow_provider_mismatch)
    # The test set the model was trained against: its spec's data.dir when it named one.
    data = load_fashion_mnist(data_dir or model.spec.data.dir, test_limit=limit, splits=("test",))
    report = evaluate_model(model, data.test_images, data.test_labels)
    if json_:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{bundle}: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} on {report['examples']:,} test images\n")
    typer.echo(format_report(report))


# `cnnkit report` and `cnnkit show` live in cli_report.py (pictures need the plots extra).
register_report_commands(command, SetOption, ForceOption)


@command()
def export(
    bundle: Path,
    format_: Annotated[str, typer.Option("--format", "-f", help="Target format: onnx.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File to write (default: the bundle's name with the format's suffix).")] = None,
    input_dtype: Annotated[str, typer.Option("--input-dtype", help="dtype of the graph's raw-pixel input: uint8 or float32.")] = "uint8",
    force: ForceOption = False,
):
    """Export a bundle for another engine: an ONNX graph from raw pixels to class probabilities."""
    from .export import export_bundle

    target = export_bundle(bundle, out, format_, force=force, input_dtype=input_dtype)
    typer.echo(f"wrote {target}")


# --------------------------------------------------------------------------------------------------
# Layer plugins


@command()
def layers(
    json_: JsonOption = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown reference of every installed layer type (docs/LAYERS.md).")] = False,
):
    """List every layer type: provider distribution and version, and its params (or why it cannot load)."""
    from .layerdoc import layer_rows, layers_markdown
    from .registry import load_all

    statuses = load_all()
    if markdown:
        typer.echo(layers_markdown(statuses), nl=False)
        return
    rows = layer_rows(statuses)
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="cnnkit layer types")
    for col in ("type", "provider", "params"):
        table.add_column(col, overflow="fold")
    for row in rows:
        if "error" in row:
            params = f"[red]cannot be used: {escape(row['error'])}[/red]"
        else:
            params = "\n".join(_describe_param(p) for p in row["params"]) or "-"
        if "conflict" in row:
            params = f"[yellow]conflict: {escape(row['conflict'])}[/yellow]\n{params}"
        table.add_row(row["type"], f"{row['dist']} {row['version']}", params)
    _console().print(table)


def _describe_param(p: dict) -> str:
    from rich.markup import escape

    default = "required" if p["required"] else f"default {json.dumps(p.get('default'))}"
    return escape(f"{p['name']}: {p['type']} ({default})")


@command()
def schema(
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    force: ForceOption = False,
):
    """Print the JSON Schema (draft-07) of a spec, including every installed layer type's params."""
    from .bundle import write_atomic
    from .bundle.atomic import check_target
    from .schema import spec_schema

    if out is not None:  # before the work, as for bundles: a regular file that is an earlier schema, or nothing
        out = check_target(out, force=force, recognise=_is_schema_file, what="cnnkit spec schema")

    document, skipped = spec_schema()
    for status in skipped:
        typer.echo(f"note: layer type {status.entry.type!r} left out of the schema: {status.error}", err=True)
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
    from .schema import SCHEMA_ID

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'"$id": "{SCHEMA_ID}"'.encode() in head


@command("check-layer")
def check_layer(
    layer_type: Annotated[str, typer.Argument(metavar="TYPE", help="A registered layer type (cnnkit layers lists them).")],
    params: Annotated[Optional[str], typer.Option("--params", help='Layer params as a JSON object, e.g. \'{"filters": 4, "kernel_size": 3}\'.')] = None,
    input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="Per-sample input shape C,H,W (or F for flat layers). Default: 3,8,8, else 12.")] = None,
):
    """Run the conformance checks on a layer type; exit 1 if any fails."""
    from .testing import run_checks

    from .errors import SpecError

    # Bad --params or --input-shape are usage errors: exit 2.
    try:
        fields = json.loads(params) if params is not None else {}
    except json.JSONDecodeError as exc:
        _fail(f"--params is not valid JSON ({exc.msg} at column {exc.colno}). Received: {params}", 2)
    if not isinstance(fields, dict):
        _fail(f"--params must be a JSON object. Received: {params}", 2)
    shape = None
    if input_shape is not None:
        try:
            shape = tuple(int(d) for d in input_shape.split(","))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            _fail(f"--input-shape must be positive integers separated by commas, like 3,8,8. Received: {input_shape}", 2)
    try:
        used, results = run_checks(layer_type, fields, shape)
    except SpecError as exc:  # params the layer rejects, or an input shape it cannot take
        _fail(str(exc), 2)
    typer.echo(f"check-layer {layer_type} params={json.dumps(fields)} input_shape={list(used)}")
    for r in results:
        typer.echo(f"  {r.status.upper():4}  {r.name}: {r.detail}")
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        typer.echo(f"error: {layer_type}: {len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {layer_type} passed {sum(r.status == 'pass' for r in results)} checks")


@command("new-layer")
def new_layer(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The layer type, e.g. my_gain (a spec writes it as \"type\").")],
    dist: Annotated[Optional[str], typer.Option("--dist", help="Distribution (pip) name. Default: cnnkit-NAME.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create the package in.")] = Path("."),
):
    """Write a ready layer plugin package: pyproject with the entry point, one layer file, README, a test."""
    from .scaffold import new_layer as write_plugin
    from .scaffold import shadows_builtin

    root = write_plugin(name, dist, out)
    typer.echo(f"wrote {root}: pip install -e {root} && cnnkit check-layer {root.name}:{name}")
    if shadows_builtin(name):
        typer.echo(f"warning: {name!r} is a built-in cnnkit layer type: a spec writing \"{name}\" gets cnnkit's; "
                   f"yours is usable only qualified, \"{root.name}:{name}\"", err=True)


@command()
def inspect(bundle: Path, json_: JsonOption = False):
    """Show a bundle's format version, spec, classes, provenance, training and weights (runs no layer code)."""
    from rich.table import Table
    from rich.text import Text

    from .bundle import describe, read

    info = describe(read(bundle), str(bundle))
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    console = _console()

    def show(*parts: str) -> None:
        console.print(Text(_printable(" ".join(parts))))

    show(f"{bundle}: cnnkit bundle format {info['version']}, sha256 {info['sha256']}")
    pre = info["preprocess"]
    show(f"model {info['name']!r}: input {info['input_shape']}, {info['total_params']:,} parameters,",
         f"preprocess x / {pre.get('divide')} - {pre.get('subtract')}" if isinstance(pre, dict) else f"preprocess {pre}")
    show(f"classes ({len(info['classes'])}):", ", ".join(info["classes"]))
    layers = Table(title="layers")
    for col, justify in (("#", "right"), ("layer", "left"), ("config", "left"), ("params", "right"), ("recorded provider", "left"), ("installed", "left")):
        layers.add_column(col, justify=justify)
    for row in info["layers"]:
        config = ", ".join(f"{k}={json.dumps(v)}" for k, v in row["config"].items())
        installed = {"same": row["installed"], "missing": "not installed"}.get(row["provenance"], f"{row['installed']} ({row['provenance']})")
        layers.add_row(str(row["index"]), *(Text(_printable(t)) for t in (row["type"], config)), f"{row['params']:,}",
                       Text(_printable(row["provider"])), Text(_printable(installed or "-")))
    console.print(layers)
    training = dict(info["training"])
    history = training.pop("history", None)
    metrics = training.pop("metrics", None)
    show("training:", ", ".join(f"{k}={json.dumps(v)}" for k, v in training.items()) or "(none recorded)")
    if isinstance(history, list) and history and all(isinstance(r, dict) for r in history):
        table = Table(title="history")
        columns = list(dict.fromkeys(k for r in history for k in r))
        for col in columns:
            table.add_column(Text(_printable(col)), justify="right")
        for r in history:
            table.add_row(*(Text(_printable(f"{r[c]:.4f}" if isinstance(r.get(c), float) else json.dumps(r.get(c)))) for c in columns))
        console.print(table)
    if isinstance(metrics, dict) and metrics:
        show("metrics:", ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {json.dumps(v)}" for k, v in metrics.items()))
    weights = Table(title="weights")
    for col, justify in (("name", "left"), ("dtype", "left"), ("shape", "left"), ("values", "right"), ("bytes", "right")):
        weights.add_column(col, justify=justify)
    for w in info["weights"]:
        weights.add_row(w["name"], w["dtype"], str(w["shape"]), f"{w['size']:,}", f"{w['bytes']:,}")
    console.print(weights)


def _printable(text: str) -> str:
    """Text from a bundle with control characters escaped, so a hostile file cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def main():
    try:
        app()
    except KeyboardInterrupt:  # between commands' own handlers, e.g. while Click parses arguments
        typer.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
