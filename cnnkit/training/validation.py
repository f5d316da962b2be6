"""Validation: a stratified hold-out from the training set, its per-epoch scores, and the best-epoch monitor.

``stratified_split`` gives every class its share of the hold-out (largest remainders, so the sizes
add up exactly), drawn from the seed alone: the same spec holds out the same examples every run.
``Monitor`` follows Keras' EarlyStopping: an epoch improves on the best so far when it is better by
more than ``min_delta``; training stops after ``patience`` epochs without improvement, and the best
epoch's weights are the ones restored.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SpecError
from ..runtime.losses import log_softmax
from ..metrics import accuracy, macro_f1
from ..runtime.model import Model
from ..runtime.tta import mean_probabilities

VALIDATION_STREAM = 0x76616C00  # "val": keeps the split apart from other streams drawn from the same seed


def stratified_split(labels: np.ndarray, size: int | float, seed: int, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, validation)`` of a seeded hold-out of ``size`` examples (an int) or a fraction (a float).

    Each class gives ``size * its share`` examples, rounded by largest remainder. Both index arrays
    are sorted, so the training examples keep their order. Raises SpecError at ``data.validation``
    when the hold-out would take the whole training set, no example, or every example of a class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    count = size if isinstance(size, int) else round(size * n)
    if count >= n:
        raise SpecError([("data.validation", f"holds out {count} examples, but the training set has only {n}; "
                          f"give fewer, or a fraction such as 0.1. Received: {size}")])
    if count < 1:
        raise SpecError([("data.validation", f"a fraction of {size} of {n} training examples holds out no example. Received: {size}")])
    per_class = np.bincount(labels, minlength=len(class_names))
    quota = count * per_class / n
    taken = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(-(quota - taken), kind="stable")  # ties: the lower class index first
    taken[by_remainder[: count - taken.sum()]] += 1
    emptied = np.flatnonzero((taken >= per_class) & (per_class > 0))
    if len(emptied):
        k = int(emptied[0])
        raise SpecError([("data.validation", f"would hold out all {per_class[k]} training examples of class {k} ({class_names[k]!r}), "
                          f"leaving none to train on; hold out fewer. Received: {size}")])
    rng = np.random.default_rng([VALIDATION_STREAM, seed])
    held = np.zeros(n, dtype=bool)
    for k in np.flatnonzero(taken):  # one draw per class, not per example
        held[rng.permutation(np.flatnonzero(labels == k))[: taken[k]]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def score(model: Model, x: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on preprocessed ``x`` (inference mode).

    With test-time augmentation (``predict.tta``) the figures are those of the views' mean
    probabilities, what the model predicts; the loss is then -log of that mean at the label.
    """
    labels = np.asarray(labels, dtype=np.int64)
    total, predicted = 0.0, np.empty(len(x), dtype=np.int64)
    tta = model.spec.predict
    for start in range(0, len(x), batch_size):
        part = labels[start : start + batch_size]
        if tta.tta:
            p = mean_probabilities(model.logits, x[start : start + batch_size], tta, model.black_value, np.float64)
            logp = np.log(np.maximum(p, np.finfo(np.float64).tiny))
        else:
            p = model.logits(x[start : start + batch_size])
            logp = log_softmax(p.astype(np.float64))
        total -= float(logp[np.arange(len(part)), part].sum())
        predicted[start : start + batch_size] = p.argmax(axis=1)
    return {
        "loss": total / len(x),
        "accuracy": accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted, model.output_shape[-1]),
    }


class Monitor:
    """Which epoch is best so far by one validation figure, and whether patience has run out."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int | None = None):
        self.monitor, self.min_delta, self.patience = monitor, min_delta, patience
        self.lower_is_better = monitor == "val_loss"
        self.best = math.inf if self.lower_is_better else -math.inf
        self.best_epoch: int | None = None
        self.waited = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's figure; True when it improves on the best so far (it becomes the best)."""
        better = value < self.best - self.min_delta if self.lower_is_better else value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.waited = value, epoch, 0
        else:
            self.waited += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.waited >= self.patience
