"""Metrics against values worked out by hand (and scikit-learn's definition of macro-F1)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import DataError
from cnnkit.metrics import accuracy, confusion_matrix, macro_f1


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_accuracy():
    assert accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3])) == 0.75
    assert accuracy(np.array([], np.int64), np.array([], np.int64)) == 0.0


def test_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    # class 0: tp 1, fp 1, fn 1 -> 2/4;  class 1: tp 1, fp 1, fn 0 -> 2/3;  class 2: tp 2, fp 0, fn 1 -> 4/5
    assert macro_f1(labels, predicted, 3) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)


def test_macro_f1_leaves_out_classes_absent_from_both_like_sklearn():
    # f1_score([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], average="macro") averages over classes 0..2 only;
    # classes 3..9 are neither present nor predicted, so they do not pull the mean down.
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    assert macro_f1(labels, predicted, 10) == macro_f1(labels, predicted, 3)


def test_macro_f1_scores_zero_for_present_but_never_predicted_and_vice_versa():
    # class 0: tp 2, fp 1, fn 0 -> 4/5; classes 1 and 3 are present but never predicted -> 0;
    # class 5 is predicted but absent -> 0. The mean runs over the four classes seen: 0, 1, 3, 5.
    labels = np.array([0, 0, 1, 3])
    predicted = np.array([0, 0, 0, 5])
    assert macro_f1(labels, predicted, 10) == pytest.approx((4 / 5 + 0 + 0 + 0) / 4)


def test_perfect_and_empty():
    y = np.array([4, 2, 9, 2])
    assert macro_f1(y, y, 10) == 1.0 and accuracy(y, y) == 1.0
    assert macro_f1(np.array([], np.int64), np.array([], np.int64), 10) == 0.0


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="0..9"):
        macro_f1(np.array([0, 12]), np.array([0, 1]), 10)
    with pytest.raises(DataError, match="0..9"):
        confusion_matrix(np.array([0, -1]), np.array([0, 1]), 10)
    with pytest.raises(DataError, match="equal length"):
        accuracy(np.array([0, 1, 2]), np.array([0, 1]))
