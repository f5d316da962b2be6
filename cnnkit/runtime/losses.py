"""Losses. Cross-entropy is computed from logits with a max-shifted log-softmax, so it never overflows."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer ``labels`` under softmax(``logits``), and its gradient wrt the logits.

    With ``label_smoothing`` = e the target is (1 - e) on the label plus e / classes on every class,
    as torch.nn.functional.cross_entropy(label_smoothing=e).
    """
    n, classes = logits.shape
    logp = log_softmax(logits)  # (N, classes)
    rows = np.arange(n)
    per_sample = -logp[rows, labels]  # (N,)
    grad = np.exp(logp)  # softmax - target, averaged over the batch
    if label_smoothing:
        per_sample = (1.0 - label_smoothing) * per_sample - label_smoothing * logp.mean(axis=1)
        grad[rows, labels] -= 1.0 - label_smoothing
        grad -= label_smoothing / classes
    else:
        grad[rows, labels] -= 1.0
    grad /= n
    return float(per_sample.mean()), grad
