"""How a model calls a layer, replayed by the conformance kit (cnnkit.testing): the per-step guard in
float32 and float64, calls interleaved the way a model's threads interleave them, and two threads at once.

A model runs one layer object for every thread: part A's forward, part B's forward, then A's
backprop, while serving threads call forward concurrently. A layer that keeps per-call state on
``self`` (the input, for its backprop) passes every check that calls it once at a time, and trains
wrong gradients with two threads; these checks call it the way a model does and compare.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from ..errors import LayerError
from ..layers.base import Context, Layer, Shape
from ..runtime.guard import LayerGuard
from .split_checks import forward_with_fixed_rng

SHARED_STATE_HINT = "keep what backprop needs in its closure, not on self: one layer object serves every thread of a model at once"
THREAD_ROUNDS = 30
THREAD_BATCH = 16  # samples per thread: enough array work that numpy releases the GIL inside it


def check_dtypes(layer: Layer, input_shape: Shape, weights_of, input_of, seed: int) -> str:
    """What a model checks at every step (cnnkit.runtime.guard), in float32 (training) and float64 (the
    kit's gradient checks): the output in the input's dtype and declared shape, the input gradient and
    each weight's gradient in that dtype and shape, updates only of non-trainable weights."""
    guard = LayerGuard(layer, input_shape, tuple(layer.output_shape(input_shape)), "the layer", "")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        for train in (False, True):
            x = input_of(dtype)
            try:
                y, backprop = guard.forward(weights_of(dtype), x, Context(train, rng=np.random.default_rng(seed)))
                if not train:
                    continue
                dx, grads = backprop(np.ones_like(y))
            except LayerError as exc:
                raise AssertionError(f"{name}: {str(exc).removeprefix('the layer breaks the layer contract: ').removeprefix('the layer: ')}") from None
            wrong = [f"dx is {dx.dtype}"] if dx is not None and dx.dtype != dtype else []
            wrong += [f"the gradient of {k!r} is {g.dtype}" for k, g in grads.items() if g.dtype != dtype]
            if wrong:
                raise AssertionError(f"backprop of a {name} pass returned {', '.join(wrong)}; keep the input's dtype (float32 in a model, float64 in the kit's gradient checks)")
    return "float32 and float64 kept by forward and backprop, shapes as declared (what a model checks at every step)"


def _pass(layer: Layer, weights: dict[str, np.ndarray], x: np.ndarray, seed: int):
    """A training forward (fixed generator) and its backprop on a fixed dy: (y, backprop, dy)."""
    y, backprop = forward_with_fixed_rng(layer, weights, x, True, seed)
    dy = np.random.default_rng([seed, 5, len(x)]).normal(size=y.shape)
    return y, backprop, dy


def _differences(got, expected) -> list[str]:
    """The parts of one call's results that differ: [(y, dx, grads)] compared exactly."""
    (y, dx, grads), (y0, dx0, grads0) = got, expected
    wrong = [] if np.array_equal(y, y0) else ["output"]
    if not ((dx is None and dx0 is None) or (dx is not None and dx0 is not None and np.array_equal(dx, dx0))):
        wrong.append("input gradient")
    wrong += [f"gradient of {k!r}" for k in sorted(grads0) if k not in grads or not np.array_equal(grads[k], grads0[k])]
    return wrong


def _alone(layer: Layer, weights, x: np.ndarray, seed: int):
    y, backprop, dy = _pass(layer, weights, x, seed)
    return (y, *backprop(dy))


def check_interleaved(layer: Layer, weights: dict[str, np.ndarray], xa: np.ndarray, xb: np.ndarray, seed: int) -> str:
    """Forward A, forward B, backprop A, backprop B (two parts of a batch on one layer object) give what
    A and B give alone."""
    alone_a, alone_b = _alone(layer, weights, xa, seed), _alone(layer, weights, xb, seed)
    try:
        ya, backprop_a, dya = _pass(layer, weights, xa, seed)
        yb, backprop_b, dyb = _pass(layer, weights, xb, seed)
        got_a, got_b = (ya, *backprop_a(dya)), (yb, *backprop_b(dyb))
    except Exception as exc:  # each alone worked: the order of calls broke it
        raise AssertionError(f"forward A, forward B, backprop A, backprop B (two parts of a batch, as a model's threads run them) raised "
                             f"{type(exc).__name__}: {exc}; each alone did not: per-call state on self? {SHARED_STATE_HINT}") from None
    for label, got, alone in (("A", got_a, alone_a), ("B", got_b, alone_b)):
        wrong = _differences(got, alone)
        if wrong:
            raise AssertionError(f"forward A, forward B, backprop A, backprop B (two parts of a batch, as a model's threads run them) changed {label}'s "
                                 f"{', '.join(wrong)} from what {label} gives alone: per-call state on self? {SHARED_STATE_HINT}")
    return "forward A, forward B, backprop A, backprop B give what each gives alone"


def check_two_threads(layer: Layer, weights: dict[str, np.ndarray], xa: np.ndarray, xb: np.ndarray, seed: int, rounds: int = THREAD_ROUNDS) -> str:
    """Two threads each run forward and backprop (training) and forward (inference) ``rounds`` times at
    once, switching as often as the interpreter allows; every result must equal the single-thread one."""
    expected = {"A": (_alone(layer, weights, xa, seed), layer.forward(weights, xa, Context())[0]),
                "B": (_alone(layer, weights, xb, seed), layer.forward(weights, xb, Context())[0])}
    problems: list[str] = []
    start = threading.Barrier(2)

    def run(label: str, x: np.ndarray) -> None:
        start.wait()
        for _ in range(rounds):
            try:
                trained, inferred = _alone(layer, weights, x, seed), layer.forward(weights, x, Context())[0]
            except Exception as exc:  # what one thread raises is a finding, not a crash of the kit
                problems.append(f"{label} raised {type(exc).__name__}: {exc}")
                return
            wrong = _differences(trained, expected[label][0]) + ([] if np.array_equal(inferred, expected[label][1]) else ["inference output"])
            if wrong:
                problems.append(f"{label}'s {', '.join(wrong)}")
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a race shows within a few rounds
    try:
        threads = [threading.Thread(target=run, args=(label, x), daemon=True) for label, x in (("A", xa), ("B", xb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    if problems:
        raise AssertionError(f"two threads calling the layer at once got results that differ from one thread ({'; '.join(problems)}): {SHARED_STATE_HINT}")
    return f"two threads at once, {rounds} rounds each: same results as one thread"
