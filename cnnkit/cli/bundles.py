"""`cnnkit predict`, `cnnkit evaluate`, `cnnkit inspect` and `cnnkit export`: using a trained bundle.

The work is done in cnnkit.bundle, cnnkit.data.images, cnnkit.evaluation and cnnkit.export; these
commands parse and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import AllowMismatchOption, DataDirOption, DataOption, DataSetOption, ForceOption, JsonOption, NoTtaOption, _console, command


@command()
def predict(
    bundle: Path,
    images: Annotated[list[Path], typer.Argument(help="PNG/JPEG files, .npy arrays or IDX files.")],
    top: Annotated[int, typer.Option(min=1, help="Show the K most likely classes.")] = 1,
    invert: Annotated[bool, typer.Option(help="Invert pictures (Fashion-MNIST is light garments on black).")] = False,
    background: Annotated[int, typer.Option(min=0, max=255, help="Gray level (after --invert) that transparent pixels become; Fashion-MNIST's is 0, black.")] = 0,
    frame: Annotated[Optional[int], typer.Option(min=0, help="Which frame of an animated image to classify (0 = first); required for animated images.")] = None,
    no_tta: NoTtaOption = False,
    json_: JsonOption = False,
    allow_provider_mismatch: AllowMismatchOption = False,
):
    """Classify images with a trained bundle: class name and probability.

    Pictures are converted to the model's channel count (grayscale or RGB) and resized to its input
    size (with the filter its image-folder training used, else bilinear); --json says what was done.
    Arrays may be channels first or channels last. A file that cannot be used is named on stderr,
    the others are still classified, and the exit code is 1.
    """
    from ..runtime.model import load
    from ..runtime.prediction import predict_files

    model = load(bundle, allow_provider_mismatch=allow_provider_mismatch)
    found = predict_files(model, images, top=top, invert=invert, background=background, frame=frame, tta=not no_tta,
                          warn=lambda message: typer.echo(f"warning: {message}", err=True))
    if json_:
        typer.echo(json.dumps(found.results, indent=2))
    else:
        for r in found.results:
            note = f"  [{r['converted']}]" if "converted" in r else ""
            typer.echo(f"{r['input']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]) + note)
    for line in found.errors:
        typer.echo(f"error: {line}", err=True)
    if found.errors:
        raise typer.Exit(1)


@command()
def evaluate(
    bundle: Path,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    set_: DataSetOption = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use the first N test images.")] = None,
    no_tta: NoTtaOption = False,
    json_: JsonOption = False,
    allow_provider_mismatch: AllowMismatchOption = False,
):
    """Per-class precision, recall, F1 and support, their averages and the confusion matrix of a bundle on the test set."""
    from ..data import load_test_set
    from ..evaluation import evaluate_model, format_report, tta_phrase
    from ..runtime.model import load

    model = load(bundle, allow_provider_mismatch=allow_provider_mismatch)
    # The test set the model was trained against, as its spec's data section names it (or as given).
    data = load_test_set(model.spec.data, model.input_shape, data_dir, limit, test_data=data, overrides=set_, classes=model.classes)
    report = evaluate_model(model, data.test_images, data.test_labels, tta=not no_tta)
    if json_:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{bundle}: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} on {report['examples']:,} test images{tta_phrase(report)}\n")
    typer.echo(format_report(report))


@command()
def export(
    bundle: Path,
    format_: Annotated[str, typer.Option("--format", "-f", help="Target format: onnx.")] = "onnx",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="File to write (default: the bundle's name with the format's suffix).")] = None,
    input_dtype: Annotated[str, typer.Option("--input-dtype", help="dtype of the graph's raw-pixel input: uint8 or float32.")] = "uint8",
    no_tta: Annotated[bool, typer.Option("--no-tta", help="Leave the bundle's test-time augmentation (predict.tta) out of the graph.")] = False,
    force: ForceOption = False,
):
    """Export a bundle for another engine: an ONNX graph from raw pixels to class probabilities."""
    from ..export import export_bundle

    target = export_bundle(bundle, out, format_, force=force, input_dtype=input_dtype, tta=not no_tta)
    typer.echo(f"wrote {target}")


@command()
def inspect(bundle: Path, json_: JsonOption = False):
    """Show a bundle's format version, spec, classes, provenance, training and weights (runs no layer code)."""
    from rich.table import Table
    from rich.text import Text

    from ..bundle import describe, read

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
    tta = (info.get("predict") or {}).get("tta") or []
    show("predict: test-time augmentation " + ", ".join(tta) + " (predict, evaluate, report and export: --no-tta turns it off)"
         if isinstance(tta, list) and tta else "predict: one view of each image (no test-time augmentation)")
    layers = Table(title="layers")
    for col, justify in (("#", "right"), ("layer", "left"), ("config", "left"), ("params", "right"), ("recorded provider", "left"), ("installed", "left")):
        layers.add_column(col, justify=justify, overflow="fold")  # a qualified type or provider is never cut to "…"
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
