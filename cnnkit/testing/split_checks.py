"""What a layer's training-split claims promise, checked (part of the conformance kit, cnnkit.testing).

A model splits a training batch over threads only through layers whose ``batch_coupling`` is
``"per_sample"`` or ``"per_part"`` (see cnnkit.layers.base); these functions check the claims on float64
weights and inputs and raise AssertionError saying what is wrong, or return a one-line summary.
"""

from __future__ import annotations

import copy

import numpy as np

from ..layers.base import Context, Layer


def forward_with_fixed_rng(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, train: bool, seed: int = 0, ctx: Context | None = None):
    """``layer.forward`` with a context whose generator (in training) is ``np.random.default_rng(seed)``,
    a fresh one each call, so every call draws the same numbers. Pass ``ctx`` to read it afterwards."""
    ctx = ctx if ctx is not None else Context(train, rng=np.random.default_rng(seed))
    return layer.forward(weights, x, ctx)


def draws_random_numbers(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, seed: int = 0) -> bool:
    """Whether a training pass of ``layer`` asks its context for a generator."""
    ctx = Context(True, rng=np.random.default_rng(seed))
    layer.forward(copy.deepcopy(weights), x.copy(), ctx)
    return ctx.rng_used


def _changed(weights: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> list[str]:
    return sorted(k for k in weights if not np.array_equal(weights[k], before[k]))


def check_per_sample(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, seed: int) -> str:
    """What batch_coupling "per_sample" promises a model that splits a training batch over threads: each
    part's rows are the whole batch's rows, the parts' weight gradients add up to the batch's, and
    forward leaves the weights alone (the parts run at once and share them)."""
    before = copy.deepcopy(weights)
    whole, backprop = forward_with_fixed_rng(layer, weights, x, True, seed)
    changed = _changed(weights, before)
    if changed:
        raise AssertionError(f"forward in training mode changed weights {changed}, but batch_coupling 'per_sample' says parts of a batch can run at once on the same weights")
    dy = np.random.default_rng([seed, 3]).normal(size=whole.shape)
    dx, grads = backprop(dy)
    summed: dict[str, np.ndarray] = {}
    split = f"a batch of {len(x)} split into 1 + {len(x) - 1}"
    for lo, hi in ((0, 1), (1, len(x))):
        what = "the first sample" if lo == 0 else "the other samples"
        part, part_backprop = forward_with_fixed_rng(layer, weights, x[lo:hi], True, seed)
        part_dx, part_grads = part_backprop(dy[lo:hi])
        for label, got, expected in (("output", part, whole[lo:hi]), ("input gradient", part_dx, dx[lo:hi])):
            if not np.allclose(got, expected, rtol=1e-10, atol=1e-12):
                worst = float(np.max(np.abs(got - expected)))
                raise AssertionError(f"in training mode, the {label} of {what} run alone differs from its rows in the whole batch ({split}; max abs difference {worst:.3g}), but batch_coupling is 'per_sample'")
        if set(part_grads) != set(grads):
            raise AssertionError(f"in training mode, backprop of {what} returned gradients {sorted(part_grads)}, the whole batch {sorted(grads)}")
        for k, g in part_grads.items():
            summed[k] = summed[k] + g if k in summed else g
    for k, g in grads.items():
        if not np.allclose(summed[k], g, rtol=1e-10, atol=1e-12):
            worst = float(np.max(np.abs(summed[k] - g)))
            raise AssertionError(f"in training mode, the gradients of {k!r} from the parts of {split} do not add up to the whole batch's (max abs difference {worst:.3g}), but batch_coupling is 'per_sample'")
    return f"{split}: same rows, input gradients and summed weight gradients; weights unchanged"


def check_per_sample_random(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, seed: int) -> str:
    """The same promise for a random layer. Its draws depend on the batch it is given, so parts
    cannot be compared with the whole; with one generator seed, though, the first sample's output,
    input gradient and share of the weight gradients must not change when the other samples do."""
    before = copy.deepcopy(weights)
    others = x.copy()
    others[1:] = np.random.default_rng([seed, 4]).normal(size=others[1:].shape)
    results = []
    for batch in (x, others):
        y, backprop = forward_with_fixed_rng(layer, weights, batch, True, seed)
        dy = np.zeros_like(y)
        dy[0] = np.random.default_rng([seed, 3]).normal(size=y[0].shape)
        results.append((y[0], *backprop(dy)))
    changed = _changed(weights, before)
    if changed:
        raise AssertionError(f"forward in training mode changed weights {changed}, but batch_coupling 'per_sample' says parts of a batch can run at once on the same weights")
    (y, dx, grads), (y2, dx2, grads2) = results
    for label, got, expected in (("output", y2, y), ("input gradient", dx2[0], dx[0]), *((f"gradient of {k!r}", grads2.get(k), g) for k, g in grads.items())):
        if got is None or not np.allclose(got, expected, rtol=1e-10, atol=1e-12):
            raise AssertionError(f"in training mode with a fixed generator, the first sample's {label} changed when the other samples changed, but batch_coupling is 'per_sample'")
    return "with a fixed generator, the first sample's output and gradients ignore the other samples; weights unchanged"


def check_per_part(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, seed: int, input_shape: tuple[int, ...]) -> str:
    """What batch_coupling "per_part" promises: forward run on a part (with its own statistics) writes
    no weight, and reports only non-trainable weights through ``ctx.update``, with their shapes."""
    before = copy.deepcopy(weights)
    ctx = Context(True, rng=np.random.default_rng(seed))
    forward_with_fixed_rng(layer, weights, x, True, seed, ctx=ctx)
    changed = _changed(weights, before)
    if changed:
        raise AssertionError(f"forward in training mode changed weights {changed}, but batch_coupling 'per_part' says parts of a batch run at once on the same weights (report state with ctx.update)")
    updates = ctx.updates
    fixed = [name for name, w in layer.weights(input_shape).items() if not w.trainable]
    stray = sorted(set(updates) - set(fixed))
    if stray:
        raise AssertionError(f"forward reported updates of {stray}, which are not non-trainable weights ({fixed})")
    for k, value in updates.items():
        if np.shape(value) != weights[k].shape or not np.all(np.isfinite(value)):
            raise AssertionError(f"forward reported an update of {k!r} with shape {list(np.shape(value))} (the weight's is {list(weights[k].shape)}) or non-finite values")
    reported = f"reports {sorted(updates)} in updates" if updates else "reports no state"
    return f"per-part statistics: forward writes no weight and {reported}"
