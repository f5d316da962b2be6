"""The report's pictures as PNG files: training curves, the confusion matrix, image grids.

matplotlib is an extra (``pip install 'cnnkit[plots]'``), imported only here and only when a picture
is drawn. Figures are made with matplotlib's object API on the Agg canvas — no pyplot, so nothing
global (backend, open figures) changes in the calling process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CnnkitError

DPI = 100


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CnnkitError("pictures need matplotlib, which is not installed: pip install 'cnnkit[plots]'") from None
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    from ..bundle import write_atomic

    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise CnnkitError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _show(axes, image: np.ndarray) -> None:
    """One image without ticks: (H, W) or (1, H, W) in gray, (3, H, W) in colour."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 3:
        axes.imshow(np.moveaxis(image, 0, -1).astype(np.uint8))
    else:
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    axes.set_xticks([])
    axes.set_yticks([])


def training_curves(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss (train, and validation when the run had it) and accuracy/macro-F1 (validation or test) per epoch. 1000x400 px."""
    figure = _figure(10, 4)
    loss_axes, score_axes = figure.subplots(1, 2)
    epochs = [r["epoch"] for r in history]

    def series(key):
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        return ([e for e, _ in points], [v for _, v in points]) if points else None

    for key, label, style in (("train_loss", "train", "o-"), ("val_loss", "validation", "s-")):
        s = series(key)
        if s:
            loss_axes.plot(*s, style, label=label)
    loss_axes.set(title="loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    for key, label, style in (("val_accuracy", "validation accuracy", "s-"), ("val_macro_f1", "validation macro-F1", "s--"),
                              ("test_accuracy", "test accuracy", "o-"), ("test_macro_f1", "test macro-F1", "o--")):
        s = series(key)
        if s:
            score_axes.plot(*s, style, label=label)
    score_axes.set(title="accuracy and macro-F1", xlabel="epoch", ylabel="score")
    for axes in (loss_axes, score_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        if epochs:
            axes.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def confusion_heatmap(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> Path:
    """Counts of (true row, predicted column) as a heat map with class names and the counts written in. 800x700 px."""
    cm = np.asarray(matrix)
    figure = _figure(8, 7)
    axes = figure.subplots()
    image = axes.imshow(cm, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    k = len(class_names)
    axes.set_xticks(range(k), class_names, rotation=45, ha="right")
    axes.set_yticks(range(k), class_names)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    threshold = cm.max() / 2 if cm.size else 0
    if k <= 30:
        for i in range(k):
            for j in range(k):
                axes.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if cm[i, j] > threshold else "black")
    figure.tight_layout()
    return _save(figure, path)


def image_grid(images: np.ndarray, captions: list[str], path: Path, title: str, columns: int = 4) -> Path:
    """Images with a caption under each, ``columns`` per row; 2.2 inches (220 px) a cell."""
    n = len(images)
    rows = max(1, -(-n // columns))
    figure = _figure(2.2 * columns, 2.2 * rows + 0.5)
    cells = np.asarray(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for i, axes in enumerate(cells):
        if i < n:
            _show(axes, images[i])
            axes.set_title(captions[i], fontsize=8)
        else:
            axes.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)
