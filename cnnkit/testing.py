"""Checks for layer authors (cnnkit's own tests use them too): float64 finite-difference gradients.

``check_gradients(layer, input_shape)`` compares a layer's backprop against central finite
differences for the input and every weight, in float64, on a small random batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .layers.base import Layer, Shape


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``array`` (perturbed in place, restored)."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        up = f()
        flat[i] = original - eps
        down = f()
        flat[i] = original
        gflat[i] = (up - down) / (2 * eps)
    return grad


def check_gradients(
    layer: Layer,
    input_shape: Shape,
    batch: int = 2,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> dict[str, float]:
    """Assert that ``layer``'s backprop matches float64 finite differences; returns max abs error per array.

    The loss is sum(y * r) for a fixed random r, so every output element's gradient is exercised.
    Inputs are drawn away from zero so kinks (relu, max) are not straddled by the perturbation.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, (batch, *input_shape)) * rng.choice([-1.0, 1.0], (batch, *input_shape))
    weights = {k: v.astype(np.float64) for k, v in layer.init_weights(tuple(input_shape), rng).items()}
    for w in weights.values():  # non-zero biases, so their gradients are exercised with structure
        w += rng.normal(0, 0.1, w.shape)
    y, _ = layer.forward(weights, x, train=True)
    r = rng.normal(size=y.shape)

    def loss() -> float:
        out, _ = layer.forward(weights, x, train=True)
        return float((out * r).sum())

    _, backprop = layer.forward(weights, x, train=True)
    dx, grads = backprop(r)
    errors = {}
    for name, analytic, target in [("input", dx, x)] + [(k, grads.get(k), w) for k, w in weights.items()]:
        if analytic is None:
            raise AssertionError(f"{type(layer).__name__}: backprop returned no gradient for weight {name!r}")
        numeric = numerical_gradient(loss, target)
        if np.shape(analytic) != numeric.shape:
            raise AssertionError(f"{type(layer).__name__}: gradient of {name} has shape {np.shape(analytic)}, expected {numeric.shape}")
        if not np.allclose(analytic, numeric, rtol=rtol, atol=atol):
            worst = float(np.max(np.abs(analytic - numeric)))
            raise AssertionError(f"{type(layer).__name__}: gradient of {name} differs from finite differences (max abs error {worst:.3g})")
        errors[name] = float(np.max(np.abs(analytic - numeric))) if numeric.size else 0.0
    return errors
