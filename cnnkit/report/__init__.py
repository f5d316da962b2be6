"""Reports with pictures: training curves, the confusion matrix, the worst mistakes, an index.html.

``write_report`` scores a model on its test set and writes ``curves.png``, ``confusion.png``,
``worst.png`` and ``index.html`` into a folder; ``write_samples`` draws a grid of training images with
their class names (the seed notebook's first look at the data). Both need matplotlib
(``pip install 'cnnkit[plots]'``); ``require_plots`` checks for it before any work is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CnnkitError
from ..files import read_head

CURVES, CONFUSION, WORST, INDEX = "curves.png", "confusion.png", "worst.png", "index.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAGE_MARKER = b"<title>cnnkit report:"


def require_plots() -> None:
    """Raise the one-line install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CnnkitError("pictures need matplotlib, which is not installed: pip install 'cnnkit[plots]'") from None


def _folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise CnnkitError(f"cannot write the report into {out}: it is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"cannot create {out}: {exc.strerror or exc}") from None
    return out


def is_png_file(path: Path) -> bool:
    """Whether ``path`` is a PNG image (its signature), which a picture may replace without --force."""
    return read_head(path, len(PNG_SIGNATURE)) == PNG_SIGNATURE


def is_report_page(path: Path) -> bool:
    """Whether ``path`` is an index.html an earlier report wrote."""
    return PAGE_MARKER in read_head(path, 200)


def check_picture(path: str | Path, force: bool = False, example: str = "samples.png") -> Path:
    """The path a picture may be written to: nothing there, or a PNG; anything else only with ``force`` (OutputError).
    ``example`` is the file name suggested when ``path`` names a folder."""
    from ..bundle.atomic import check_target

    return check_target(path, force=force, recognise=is_png_file, what="PNG image", example=example)


def worst_mistakes(proba: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the misclassified examples the model was surest about (highest probability on its wrong answer)."""
    predicted = proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = proba[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


def write_report(model, images: np.ndarray, labels: np.ndarray, out: str | Path, source: str, worst: int = 16,
                 force: bool = False, tta: bool = True) -> dict[str, Path]:
    """Score ``model`` on the labelled test ``images`` and write the pictures and index.html into ``out``.

    ``tta``: with the spec's test-time augmentation (``predict.tta``), as the model predicts.

    Files of an earlier report are replaced; other files of the same names only with ``force``.
    """
    from ..bundle import write_atomic
    from ..bundle.atomic import check_target
    from ..evaluation import classification_report, tta_used
    from . import page, plots

    require_plots()
    out = _folder(Path(out))
    for name in (CURVES, CONFUSION, WORST):  # before any work, as for bundles: never clobber what is not ours
        check_picture(out / name, force)
    check_target(out / INDEX, force=force, recognise=is_report_page, what="cnnkit report page")
    labels = np.asarray(labels, dtype=np.int64)
    proba = model.predict_proba(images, tta=tta)
    predicted = proba.argmax(axis=1)
    names = list(model.classes)
    report = classification_report(labels, predicted, names)
    report["macro_f1"] = report["macro"]["f1"]
    report.update(tta_used(model, tta))
    title = str(model.spec.name)
    written: dict[str, Path] = {}
    pictures: dict[str, str] = {}
    history = (model.metadata or {}).get("history") or []
    if history:
        written["curves"] = plots.training_curves(history, out / CURVES, f"{title}: training")
        pictures["Training curves"] = CURVES
    written["confusion"] = plots.confusion_heatmap(report["confusion_matrix"], names, out / CONFUSION,
                                                   f"{title}: confusion matrix ({len(labels):,} test images)")
    pictures["Confusion matrix"] = CONFUSION
    chosen = worst_mistakes(proba, labels, worst)
    if len(chosen):
        captions = [f"true: {names[labels[i]]}\npredicted: {names[predicted[i]]} ({proba[i, predicted[i]]:.2f})" for i in chosen]
        written["worst"] = plots.image_grid(images[chosen], captions, out / WORST, f"{title}: the {len(chosen)} surest mistakes")
        pictures["The surest mistakes"] = WORST
    html = page.render(model.spec.to_dict(), model.metadata or {}, report, pictures, source)
    try:
        written["index"] = write_atomic(out / INDEX, html.encode("utf-8"))
    except OSError as exc:
        raise CnnkitError(f"cannot write {out / INDEX}: {exc.strerror or exc}") from None
    return written


def write_samples(images: np.ndarray, labels: np.ndarray, class_names: list[str], path: str | Path, title: str, columns: int = 3,
                  force: bool = False) -> Path:
    """A grid of images with their class names (``len(images)`` of them, ``columns`` per row).

    ``path`` must be a PNG or nothing; another file is replaced only with ``force``.
    """
    from . import plots

    require_plots()
    path = Path(path)
    if path.is_dir():
        raise CnnkitError(f"cannot write {path}: it is a directory; give a file name such as {path / 'samples.png'}")
    path = check_picture(path, force)
    captions = [f"{class_names[int(k)]} ({int(k)})" for k in labels]
    return plots.image_grid(images, captions, path, title, columns=columns)


def report_source(path: str | Path) -> tuple[Any, str, Path]:
    """(model, description, default output folder) for a bundle file, or for a run folder the bundle
    the run delivered (not its last checkpoint), into the run's report folder: the same model the
    report written at the end of the run shows. A bundle named inside a run folder (``last.cnnkit``)
    gets its own folder (``last-report``), so the run's report is not replaced by another model's."""
    from ..runtime.model import load

    path = Path(path)
    if path.is_dir():
        from ..training.runfolder import delivered_bundle

        delivered = delivered_bundle(path)
        return load(delivered), str(delivered), path / "report"
    return load(path), str(path), path.with_name(f"{path.stem}-report")
