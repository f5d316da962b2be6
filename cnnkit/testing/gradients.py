"""Float64 finite differences against a layer's backprop (part of the conformance kit, cnnkit.testing)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..layers.base import Layer, Shape
from ..layers.legacy import adapt
from .split_checks import forward_with_fixed_rng


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


def gradient_mismatch(analytic: np.ndarray, numeric: np.ndarray) -> str:
    """How far an analytic gradient is from the numeric one: max absolute and relative error, and
    the least-squares ratio analytic/numeric (2.0 for a gradient twice too large, -1.0 for a sign bug)."""
    diff = np.abs(analytic - numeric)
    relative = diff / np.maximum(np.abs(numeric), 1e-12)
    norm = float(np.sum(numeric * numeric))
    ratio = f"{float(np.sum(analytic * numeric)) / norm:.4g}" if norm > 0 else "undefined (numeric gradient is zero)"
    return f"max abs error {float(diff.max()):.3g}, max relative error {float(relative.max()):.3g}, ratio analytic/numeric {ratio}"


def check_gradients(
    layer: Layer,
    input_shape: Shape,
    batch: int = 2,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    train: bool = True,
) -> dict[str, float]:
    """Assert that ``layer``'s backprop matches float64 finite differences; returns max abs error per array.

    Covers the input and every trainable weight (a ``trainable=False`` weight must get no
    gradient). An older-contract layer is checked through its adapter. The loss is sum(y * r) for a fixed random r, so every output element's gradient is
    exercised. Inputs are drawn away from zero so kinks (relu, max) are not straddled. A random
    layer gets the same fixed generator on every call, so the function differentiated is fixed.
    """
    layer = adapt(layer)
    name = type(getattr(layer, "wrapped", layer)).__name__
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, (batch, *input_shape)) * rng.choice([-1.0, 1.0], (batch, *input_shape))
    weights = {k: v.astype(np.float64) for k, v in layer.initial_weights(tuple(input_shape), rng).items()}
    for w in weights.values():  # non-zero biases, so their gradients are exercised with structure
        w += rng.normal(0, 0.1, w.shape)
    fixed = {k for k, w in layer.weights(tuple(input_shape)).items() if not w.trainable}
    y, _ = forward_with_fixed_rng(layer, weights, x, train, seed)
    r = rng.normal(size=y.shape)

    def loss() -> float:
        out, _ = forward_with_fixed_rng(layer, weights, x, train, seed)
        return float((out * r).sum())

    _, backprop = forward_with_fixed_rng(layer, weights, x, train, seed)
    dx, grads = backprop(r)
    stray = sorted(set(grads) & fixed)
    if stray:
        raise AssertionError(f"{name}: backprop returned gradients for non-trainable weights {stray}; an optimizer would change them")
    unknown = sorted(set(grads) - set(weights))
    if unknown:
        raise AssertionError(f"{name}: backprop returned gradients for unknown weights {unknown}; weights are {sorted(weights)}")
    errors = {}
    targets = [("input", dx, x)] + [(k, grads.get(k), w) for k, w in weights.items() if k not in fixed]
    for what, analytic, target in targets:
        if analytic is None:
            raise AssertionError(f"{name}: backprop returned no gradient for weight {what!r} (declare it Weight(..., trainable=False) if it is not trained)")
        numeric = numerical_gradient(loss, target)
        if np.shape(analytic) != numeric.shape:
            raise AssertionError(f"{name}: gradient of {what} has shape {np.shape(analytic)}, expected {numeric.shape}")
        if not np.allclose(analytic, numeric, rtol=rtol, atol=atol):
            raise AssertionError(f"{name}: gradient of {what} differs from finite differences ({gradient_mismatch(np.asarray(analytic, np.float64), numeric)})")
        errors[what] = float(np.max(np.abs(analytic - numeric))) if numeric.size else 0.0
    return errors
