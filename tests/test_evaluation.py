"""Evaluation in depth against scikit-learn's classification_report and confusion_matrix."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.evaluation import classification_report, format_report

NAMES = [f"class{i}" for i in range(6)]


def cases():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, 300)
    noisy = np.where(rng.random(300) < 0.3, rng.integers(0, 6, 300), labels)
    yield "random", labels, noisy
    # class 4 never predicted, class 5 neither present nor predicted, class 3 predicted but absent
    yield "gaps", np.array([0, 0, 1, 2, 2, 4, 4, 1]), np.array([0, 1, 1, 2, 3, 0, 2, 1])
    yield "perfect", np.arange(6), np.arange(6)
    yield "one class", np.zeros(5, np.int64), np.array([0, 0, 1, 0, 0])


@pytest.mark.parametrize("name,labels,predicted", list(cases()), ids=[c[0] for c in cases()])
def test_matches_sklearn(name, labels, predicted):
    metrics = pytest.importorskip("sklearn.metrics")
    report = classification_report(labels, predicted, NAMES)
    p, r, f, s = metrics.precision_recall_fscore_support(labels, predicted, labels=range(6), zero_division=0)
    for i, row in enumerate(report["classes"]):
        assert row["name"] == NAMES[i] and row["support"] == s[i]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
    for average in ("macro", "weighted"):
        # without labels=: sklearn averages over the classes that occur in labels or predictions
        expected = metrics.precision_recall_fscore_support(labels, predicted, average=average, zero_division=0)[:3]
        got = report[average]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(expected, abs=1e-12)
        assert got["support"] == len(labels)
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    np.testing.assert_array_equal(report["confusion_matrix"], metrics.confusion_matrix(labels, predicted, labels=range(6)))
    assert report["examples"] == len(labels)


def test_macro_f1_agrees_with_the_training_figure():
    from cnnkit.metrics import macro_f1

    _, labels, predicted = next(cases())
    assert classification_report(labels, predicted, NAMES)["macro"]["f1"] == pytest.approx(macro_f1(labels, predicted, 6), abs=1e-15)


def test_text_has_every_class_averages_and_matrix():
    labels, predicted = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    text = format_report(classification_report(labels, predicted, ["T-shirt/top", "Trouser", "Pullover"]))
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert lines[1].split() == ["T-shirt/top", "0.5000", "0.5000", "0.5000", "2"]
    assert any(l.split()[:2] == ["macro", "avg"] for l in lines) and any(l.split()[:2] == ["weighted", "avg"] for l in lines)
    matrix = lines[lines.index("confusion matrix (rows: true class, columns: predicted class)") + 1 :]
    assert matrix[0].split() == ["0", "1", "2"]
    assert matrix[1].split() == ["0:", "T-shirt/top", "1", "1", "0"]
    assert matrix[3].split() == ["2:", "Pullover", "1", "0", "2"]
