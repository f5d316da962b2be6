"""Classification metrics: confusion matrix, accuracy, macro-F1 (as scikit-learn defines them)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(labels == predicted)) if len(labels) else 0.0


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class with no true and no predicted samples scores 0 (sklearn's default)."""
    cm = confusion_matrix(labels, predicted, num_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # predicted + actual = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())
