"""Evaluation in depth: per-class precision, recall, F1 and support, their averages, the confusion matrix.

The figures follow scikit-learn's ``classification_report``: a class never predicted has precision 0
(``zero_division=0``), a class absent from the labels has recall 0; the macro average runs over the
classes that occur in the labels or the predictions (``f1_score(average="macro")`` without ``labels=``,
as ``cnnkit.metrics.macro_f1``), the weighted average weights each class by its support.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import accuracy, confusion_matrix


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_report(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Every figure of a classification as plain JSON-ready values.

    ``{"examples", "accuracy", "classes": [{"name", "precision", "recall", "f1", "support"}],
    "macro": {...}, "weighted": {...}, "confusion_matrix": [[count of (true row, predicted column)]]}``.
    """
    k = len(class_names)
    cm = confusion_matrix(labels, predicted, k)
    tp = np.diag(cm).astype(np.float64)
    predicted_count, support = cm.sum(axis=0), cm.sum(axis=1)
    precision, recall = _ratio(tp, predicted_count), _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted_count + support)
    seen = (predicted_count + support) > 0
    total = int(support.sum())

    def average(weights: np.ndarray) -> dict[str, float]:
        if weights.sum() == 0:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        w = weights / weights.sum()
        return {"precision": float(w @ precision), "recall": float(w @ recall), "f1": float(w @ f1)}

    return {
        "examples": total,
        "accuracy": accuracy(labels, predicted),
        "classes": [{"name": class_names[i], "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i in range(k)],
        "macro": {**average(seen.astype(np.float64)), "support": total},
        "weighted": {**average(support.astype(np.float64)), "support": total},
        "confusion_matrix": cm.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text: the per-class table with its averages, then the confusion matrix (rows: true class)."""
    names = [c["name"] for c in report["classes"]]
    width = max([len(n) for n in names] + [len("weighted avg")])
    lines = [f"{'':>{width}}  precision  recall     f1  support"]
    for c in report["classes"]:
        lines.append(f"{c['name']:>{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}")
    lines.append("")
    lines.append(f"{'accuracy':>{width}}  {'':9}  {'':6}  {report['accuracy']:.4f}  {report['examples']:7d}")
    for key in ("macro", "weighted"):
        a = report[key]
        lines.append(f"{key + ' avg':>{width}}  {a['precision']:9.4f}  {a['recall']:6.4f}  {a['f1']:.4f}  {a['support']:7d}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted class)")
    cm = report["confusion_matrix"]
    labels = [f"{i}: {name}" for i, name in enumerate(names)]
    label_width = max(len(label) for label in labels)
    cell = max([len(str(v)) for row in cm for v in row] + [len(str(len(names) - 1))]) + 1
    lines.append(f"{'':>{label_width}} " + "".join(f"{j:>{cell}}" for j in range(len(names))))
    for label, row in zip(labels, cm):
        lines.append(f"{label:<{label_width}} " + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def evaluate_model(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, tta: bool = True) -> dict[str, Any]:
    """``classification_report`` of ``model`` on raw labelled images, with ``macro_f1`` (the macro F1) at the top.

    ``tta``: with the spec's test-time augmentation (``predict.tta``), as the model predicts. The
    report says which transforms were used (``tta``, [] for none) and how many views of each image
    were classified (``views``).
    """
    predicted = model.predict(images, batch_size=batch_size, tta=tta)
    report = classification_report(np.asarray(labels, dtype=np.int64), predicted, list(model.classes))
    return {"examples": report.pop("examples"), "accuracy": report.pop("accuracy"), "macro_f1": report["macro"]["f1"],
            **tta_used(model, tta), **report}


def tta_used(model, tta: bool) -> dict[str, Any]:
    """What a report says of its test-time augmentation: ``tta``, the transforms used ([] for none),
    and ``views``, how many views of each image were classified."""
    return {"tta": list(model.spec.predict.tta), "views": model.spec.predict.views} if tta else {"tta": [], "views": 1}


def tta_phrase(report: dict[str, Any]) -> str:
    """How the images of a report were classified, for a line of text: ' with test-time augmentation
    (hflip: 2 views an image)' or ''."""
    if not report.get("tta"):
        return ""
    return f" with test-time augmentation ({', '.join(report['tta'])}: {report['views']} views an image)"
