"""Cross-entropy with label smoothing against torch.nn.functional.cross_entropy: loss and gradient."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.runtime.losses import softmax_cross_entropy


@pytest.mark.torch
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4, 0.95])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_matches_torch(smoothing, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(7, 10)) * 4).astype(dtype)
    labels = rng.integers(0, 10, 7)
    loss, grad = softmax_cross_entropy(logits, labels, label_smoothing=smoothing)
    t = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(t, torch.tensor(labels), label_smoothing=smoothing)
    expected.backward()
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(expected.item(), rel=tol)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=tol, atol=tol)


def test_label_smoothing_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 5))
    labels = np.array([0, 4, 2])
    _, grad = softmax_cross_entropy(logits, labels, label_smoothing=0.2)
    h = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        up, down = logits.copy(), logits.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (softmax_cross_entropy(up, labels, 0.2)[0] - softmax_cross_entropy(down, labels, 0.2)[0]) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_smoothing_keeps_a_floor_under_the_loss():
    """A confident, correct prediction still costs something with smoothing on, and nothing overflows."""
    logits = np.array([[1000.0, -1000.0, 0.0]])
    plain, _ = softmax_cross_entropy(logits, np.array([0]))
    smoothed, grad = softmax_cross_entropy(logits, np.array([0]), label_smoothing=0.3)
    assert plain == 0.0 and np.isfinite(smoothed) and smoothed > 100
    assert np.all(np.isfinite(grad)) and grad.sum() == pytest.approx(0.0, abs=1e-12)
