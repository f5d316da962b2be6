"""Classification metrics: confusion matrix, accuracy, macro-F1 (as scikit-learn defines them)."""

from __future__ import annotations

import numpy as np

from .errors import DataError


def _check(labels: np.ndarray, predicted: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise DataError(f"labels and predictions must be 1-D and of equal length. Received: {list(labels.shape)} and {list(predicted.shape)}")
    if num_classes is not None and len(labels):
        low, high = min(labels.min(), predicted.min()), max(labels.max(), predicted.max())
        if low < 0 or high >= num_classes:
            raise DataError(f"class indices must lie in 0..{num_classes - 1}. Received: values from {low} to {high}")
    return labels.astype(np.int64), predicted.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted], (num_classes, num_classes)."""
    labels, predicted = _check(labels, predicted, num_classes)
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Fraction of predictions equal to the label (0.0 for no examples)."""
    labels, predicted = _check(labels, predicted)
    return float(np.mean(labels == predicted)) if len(labels) else 0.0


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``labels`` or ``predicted``.

    This is ``sklearn.metrics.f1_score(labels, predicted, average="macro")``: a class that is neither
    present nor predicted (common in a small test subset) is left out rather than scored 0, and a
    class that is present but never predicted (or predicted but never present) scores 0.
    """
    cm = confusion_matrix(labels, predicted, num_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # predicted + actual = 2tp + fp + fn
    seen = denom > 0
    if not seen.any():
        return 0.0
    return float(np.mean(2 * tp[seen] / denom[seen]))
