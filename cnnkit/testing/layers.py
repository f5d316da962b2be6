"""Conformance kit for layer authors (cnnkit's own tests use it too).

``check_layer(type_or_class, params, input_shape)`` runs every check a layer must pass and raises
AssertionError naming the failed check; ``run_checks`` returns each check's outcome instead (the
``cnnkit check-layer`` command prints them). ``check_gradients`` compares a layer's backprop with
float64 central finite differences on its own.

Every training pass the kit makes gets a context whose generator has a fixed seed, so the gradient,
determinism and shape checks see one fixed draw; for a layer that asks for ``ctx.rng`` the
"randomness" check then asserts that the same seed repeats and different seeds differ. A layer written
for the older contract is checked through its adapter (cnnkit.layers.legacy), with a note saying so.
"""

from __future__ import annotations

import copy
import math
import numbers
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from ..plugins import registry
from ..errors import RegistryError, SpecError
from ..layers.base import Context, Layer, Shape
from ..layers.legacy import DEPRECATION, LegacyLayer, adapt
from .gradients import check_gradients, gradient_mismatch, numerical_gradient
from .model_calls import THREAD_BATCH, check_dtypes, check_interleaved, check_two_threads
from .split_checks import check_per_part, check_per_sample, check_per_sample_random, draws_random_numbers, forward_with_fixed_rng

__all__ = ["CheckResult", "check_gradients", "check_layer", "forward_with_fixed_rng", "gradient_mismatch", "numerical_gradient", "run_checks"]

# Tried in order when no input shape is given: an image-like input, then a flat one (dense, softmax).
DEFAULT_INPUT_SHAPES: tuple[Shape, ...] = ((3, 8, 8), (12,))


# --------------------------------------------------------------------------------------------------
# The conformance checks


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Literal["pass", "fail", "skip", "note"]
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class _Subject:
    layer: Layer
    layer_type: str | None  # None: the class is not registered, so no spec (or bundle) can name it
    params: dict[str, Any]
    input_shape: Shape
    batch: int
    seed: int


def _resolve_class(type_or_class: str | type[Layer]) -> tuple[type[Layer], str | None]:
    if isinstance(type_or_class, str):
        return registry.load(type_or_class), type_or_class
    cls = type_or_class
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise RegistryError(f"check_layer needs a layer type name or a Layer subclass. Received: {cls!r}")
    problem = registry.contract_problem(cls)
    if problem:
        raise RegistryError(f"{cls.__module__}.{cls.__qualname__} breaks the layer contract: {problem}")
    value = f"{cls.__module__}:{cls.__qualname__}"
    for entry in registry.list_layers():
        if entry.value == value:
            return cls, entry.spec_type
    return cls, None


def params_error(label: str, exc: ValidationError, params_model: type) -> SpecError:
    """A plugin's params refused by its ``Params`` model, as a SpecError with one path per problem
    (``"leaky_relu params.negative_slope"``): the kits' bad-argument error."""
    from ..spec.problems import pydantic_problems

    return SpecError([(f"{label} params{path[len('params'):]}", msg) for path, msg in pydantic_problems(exc, params_model, ("params",))])


def _subject(type_or_class, params, input_shape, batch, seed) -> _Subject:
    cls, layer_type = _resolve_class(type_or_class)
    params = dict(params or {})
    label = layer_type or cls.__name__
    try:
        layer = adapt(cls(cls.Params.model_validate(params)))
    except ValidationError as exc:
        raise params_error(label, exc, cls.Params) from None
    candidates = [tuple(input_shape)] if input_shape is not None else list(DEFAULT_INPUT_SHAPES)
    rejected = []
    for shape in candidates:
        try:
            layer.output_shape(shape)
            return _Subject(layer, layer_type, params, shape, batch, seed)
        except ValueError as exc:
            rejected.append(f"input shape {list(shape)}: {exc}")
    raise SpecError(f"{label} rejects " + "; ".join(rejected) + " (choose an input shape it accepts)")


def _random_input(s: _Subject, dtype, batch: int | None = None) -> np.ndarray:
    rng = np.random.default_rng([s.seed, 1])
    return rng.normal(size=(batch or s.batch, *s.input_shape)).astype(dtype)


def _weights(s: _Subject, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([s.seed, 2])
    return {k: np.asarray(v, dtype=dtype) for k, v in s.layer.initial_weights(s.input_shape, rng).items()}


def _check_contract(s: _Subject) -> CheckResult | str:
    if isinstance(s.layer, LegacyLayer):
        return CheckResult("layer contract", "note", DEPRECATION)
    return f"weights() + forward(weights, x, ctx), batch_coupling {s.layer.batch_coupling!r}"


def _check_weights(s: _Subject) -> str:
    described = s.layer.weights(s.input_shape)
    shapes = {}
    for name, w in described.items():
        dims = getattr(w, "shape", None)
        if not (isinstance(name, str) and isinstance(dims, tuple) and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims)):
            raise AssertionError(f"weights({list(s.input_shape)}) must map names to Weight(shape=tuple of positive ints, ...). Received: {name!r}: {w!r}")
        shapes[name] = tuple(int(d) for d in dims)
    weights = s.layer.initial_weights(s.input_shape, np.random.default_rng(s.seed))
    if set(weights) != set(shapes):
        raise AssertionError(f"the initial weights are {sorted(weights)} but the layer declares {sorted(shapes)}")
    for name, array in weights.items():
        if np.shape(array) != shapes[name]:
            raise AssertionError(f"the initial {name!r} has shape {list(np.shape(array))}, the layer declares {list(shapes[name])}")
        if np.asarray(array).dtype != np.float32:
            raise AssertionError(f"the initial {name!r} is {np.asarray(array).dtype}; weights must be float32")
    total = sum(math.prod(v) for v in shapes.values())
    return f"{len(shapes)} weights, {total} values" if shapes else "no weights"


def _check_output_shape(s: _Subject) -> str:
    returned = s.layer.output_shape(s.input_shape)
    if not (isinstance(returned, (tuple, list)) and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in returned)):
        raise AssertionError(f"output_shape({list(s.input_shape)}) returned {returned!r}; it must return a tuple of ints")
    declared = tuple(int(d) for d in returned)
    for train in (False, True):
        y, _ = forward_with_fixed_rng(s.layer, _weights(s), _random_input(s, np.float32), train, s.seed)
        mode = "train" if train else "inference"
        if y.shape != (s.batch, *declared):
            raise AssertionError(f"forward ({mode}) returned shape {list(y.shape)}, but output_shape({list(s.input_shape)}) says {[s.batch, *declared]}")
        if y.dtype != np.float32:
            raise AssertionError(f"forward ({mode}) turned float32 input into {y.dtype}; the runtime is float32 end to end")
    return f"{list(s.input_shape)} -> {list(declared)}, float32 kept"


def _check_gradients(s: _Subject, train: bool) -> str:
    errors = check_gradients(s.layer, s.input_shape, batch=2, seed=s.seed, train=train)
    return f"max abs error {max(errors.values()):.1e} over {', '.join(errors)}"


RNG_HINT = "draw from ctx.rng, not np.random: in training the model gives each layer a generator seeded from (train.seed, epoch, step, layer, part), so runs repeat; in inference ctx.rng is None and a layer draws nothing"


def _global_generators_used(call: Callable[[], Any]) -> list[str]:
    """Which of Python's global generators ``call`` drew from (their states before and after)."""
    numpy_before, python_before = np.random.get_state(), random.getstate()
    call()
    numpy_after = np.random.get_state()
    used = [] if np.array_equal(numpy_before[1], numpy_after[1]) and numpy_before[2:] == numpy_after[2:] else ["np.random"]
    return used + ([] if random.getstate() == python_before else ["random"])


def _check_determinism(s: _Subject) -> str:
    x = _random_input(s, np.float32)
    for train in (False, True):
        mode = "train" if train else "inference"
        base = _weights(s)
        used = _global_generators_used(lambda: forward_with_fixed_rng(s.layer, copy.deepcopy(base), x.copy(), train, s.seed))
        if used:
            raise AssertionError(f"forward ({mode} mode) drew from the global generator {' and '.join(used)}: {RNG_HINT}")
        first, _ = forward_with_fixed_rng(s.layer, copy.deepcopy(base), x.copy(), train, s.seed)
        second, _ = forward_with_fixed_rng(s.layer, copy.deepcopy(base), x.copy(), train, s.seed)
        if not np.array_equal(first, second):
            seeded = " and generator seed" if train and draws_random_numbers(s.layer, base, x, s.seed) else ""
            raise AssertionError(f"two forward passes ({mode} mode) on the same input{seeded} and weights differ: {RNG_HINT}")
    weights = _weights(s)
    before = copy.deepcopy(weights)
    s.layer.forward(weights, x, Context())
    changed = sorted(k for k in weights if not np.array_equal(weights[k], before[k]))
    if changed:
        raise AssertionError(f"forward in inference mode changed weights {changed}; only training may update state")
    return "identical outputs, no global generator; inference leaves weights unchanged"


def _check_dtypes(s: _Subject) -> str:
    return check_dtypes(s.layer, s.input_shape, lambda dtype: _weights(s, dtype), lambda dtype: _random_input(s, dtype), s.seed)


def _two_parts(s: _Subject, batch: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """float64 weights and two inputs of ``batch`` samples each (parts A and B of a batch)."""
    a, b = (np.random.default_rng([s.seed, 6, part]).normal(size=(batch, *s.input_shape)) for part in (0, 1))
    return _weights(s, np.float64), a, b


def _check_shared_state(s: _Subject) -> str:
    return check_interleaved(s.layer, *_two_parts(s, s.batch), s.seed)


def _check_threads(s: _Subject) -> str:
    # Parts big enough that numpy releases the GIL inside their array work, so the threads overlap.
    return check_two_threads(s.layer, *_two_parts(s, max(s.batch, THREAD_BATCH)), s.seed)


def _check_batch_independence(s: _Subject) -> str:
    # float64 so the tolerance can be tight: summation order may differ between batch sizes, but a
    # real dependence on other samples (batch statistics in inference, say) shows up far above it.
    weights = _weights(s, np.float64)
    x = _random_input(s, np.float64)
    together, _ = s.layer.forward(weights, x, Context())
    for i in range(s.batch):
        alone, _ = s.layer.forward(weights, x[i : i + 1], Context())
        if not np.allclose(together[i : i + 1], alone, rtol=1e-10, atol=1e-12):
            worst = float(np.max(np.abs(together[i : i + 1] - alone)))
            raise AssertionError(f"in inference mode, sample {i} of a batch of {s.batch} differs from that sample run alone (max abs difference {worst:.3g})")
    return f"each of {s.batch} rows equals that sample alone"


def _check_training_split(s: _Subject) -> CheckResult | str:
    name = "training split"
    coupling = s.layer.batch_coupling
    if coupling == "whole":
        return CheckResult(name, "skip", "batch_coupling is 'whole', so a model never splits a training batch through this layer")
    if s.batch < 2:
        return CheckResult(name, "skip", f"a batch of {s.batch} cannot be split; use a batch of 2 or more")
    weights, x = _weights(s, np.float64), _random_input(s, np.float64)
    if coupling == "per_part":
        return check_per_part(s.layer, weights, x, s.seed, s.input_shape)
    check = check_per_sample_random if draws_random_numbers(s.layer, weights, x, s.seed) else check_per_sample
    return check(s.layer, weights, x, s.seed)


def _check_randomness(s: _Subject) -> CheckResult | str:
    weights, x = _weights(s), _random_input(s, np.float32)
    if not draws_random_numbers(s.layer, weights, x, s.seed):
        return CheckResult("randomness", "skip", "a training pass does not ask for ctx.rng, so the layer draws no random numbers")

    def draw(seed):
        return s.layer.forward(copy.deepcopy(weights), x.copy(), Context(True, rng=np.random.default_rng([s.seed, seed])))[0]

    first = draw(10)
    if not np.array_equal(first, draw(10)):
        raise AssertionError("two training passes with generators of the same seed differ: draw only from the rng passed in")
    if all(np.array_equal(first, draw(seed)) for seed in (11, 12, 13)):
        raise AssertionError("four generator seeds gave identical training outputs: a layer that takes rng must draw from it (check it with params that make it random)")
    return "the same generator seed repeats the output; different seeds draw different ones"


def _check_bundle_round_trip(s: _Subject) -> CheckResult | str:
    if s.layer_type is None:
        return CheckResult("bundle round trip", "skip", "the class is not registered under the cnnkit.layers entry points, so no bundle can name it")
    from ..bundle import save
    from ..runtime.model import Model, load

    # A qualified type ("dist:type") holds a ':', which a spec name may not.
    spec = {"name": f"check-{s.layer_type.replace(':', '-')}", "input": {"shape": list(s.input_shape)}, "layers": [{"type": s.layer_type, **s.params}]}
    model = Model(spec)
    x = _random_input(s, np.float32)
    # One training step first, so the saved weights (running statistics included) are not their initial values.
    y, backprop = model.forward(x, train=True)
    for name, g in backprop(np.ones_like(y)).items():
        model.weights[name] -= np.float32(0.1) * g.astype(np.float32)
    expected, _ = model.forward(x, train=False)
    with tempfile.TemporaryDirectory() as folder:
        path = save(model, Path(folder) / "layer.cnnkit")
        loaded = load(path)
    for name, array in model.weights.items():
        if not np.array_equal(array, loaded.weights[name]) or array.dtype != loaded.weights[name].dtype:
            raise AssertionError(f"weight {name!r} changed through the bundle")
    actual, _ = loaded.forward(x, train=False)
    if not np.array_equal(expected, actual):
        raise AssertionError(f"outputs differ after the bundle round trip (max abs difference {float(np.max(np.abs(expected - actual))):.3g})")
    return f"{len(model.weights)} weights and outputs identical after save + load"


_CHECKS: list[tuple[str, Callable[[_Subject], Any]]] = [
    ("layer contract", _check_contract),
    ("weights", _check_weights),
    ("output shape", _check_output_shape),
    ("gradients (train)", lambda s: _check_gradients(s, True)),
    ("gradients (inference)", lambda s: _check_gradients(s, False)),
    ("dtypes", _check_dtypes),
    ("determinism", _check_determinism),
    ("randomness", _check_randomness),
    ("batch independence", _check_batch_independence),
    ("interleaved calls", _check_shared_state),
    ("two threads", _check_threads),
    ("training split", _check_training_split),
    ("bundle round trip", _check_bundle_round_trip),
]


def run_checks(
    type_or_class: str | type[Layer],
    params: dict[str, Any] | None = None,
    input_shape: Shape | None = None,
    batch: int = 3,
    seed: int = 0,
) -> tuple[Shape, list[CheckResult]]:
    """Run every conformance check; returns the input shape used and each check's outcome.

    Bad arguments (unknown type, invalid params, an input shape the layer rejects) raise a
    CnnkitError; a failing check is recorded, and the checks after it still run.
    """
    subject = _subject(type_or_class, params, input_shape, batch, seed)
    return subject.input_shape, run_each(_CHECKS, subject)


def run_each(checks: list[tuple[str, Callable[[Any], Any]]], subject: Any, findings: tuple[type[Exception], ...] = (AssertionError,)) -> list[CheckResult]:
    """Each check's outcome, in order: a returned string passes, a returned CheckResult stands, an
    exception of ``findings`` fails with its message, any other exception fails as what the plugin
    raised (a crash inside a plugin is a failed check, not a crash of the kit). Later checks still run."""
    results = []
    for name, check in checks:
        try:
            outcome = check(subject)
        except findings as exc:
            results.append(CheckResult(name, "fail", str(exc)))
        except Exception as exc:
            results.append(CheckResult(name, "fail", f"raised {type(exc).__name__}: {exc}"))
        else:
            results.append(outcome if isinstance(outcome, CheckResult) else CheckResult(name, "pass", outcome))
    return results


def check_layer(
    type_or_class: str | type[Layer],
    params: dict[str, Any] | None = None,
    input_shape: Shape | None = None,
    batch: int = 3,
    seed: int = 0,
) -> list[CheckResult]:
    """Assert that a layer honours the contract: its weight descriptions and initial values, output
    shape and float32, float64 gradients (train and inference), determinism, randomness (a layer that
    asks for ``ctx.rng``: the same generator seed repeats, different seeds differ), batch independence
    in inference, what its ``batch_coupling`` claims ("per_sample": in training, a batch split in two
    gives the same rows and the same summed weight gradients — for a random layer: with a fixed
    generator, one sample's output and gradients ignore the others — and forward changes no weights;
    "per_part": forward writes no weight and reports only non-trainable ones through ``ctx.update``),
    and an exact bundle round trip. An older-contract layer gets a "layer contract" note.

    ``type_or_class`` is a registered type name or a Layer subclass (a class that is not registered
    skips the bundle check; batch_coupling "whole" skips the training-split check; a layer that never
    asks for ``ctx.rng`` skips the randomness check). ``input_shape`` excludes the batch axis; by
    default (3, 8, 8), or (12,) for layers that need a flat input. Raises AssertionError naming every
    failed check.
    """
    shape, results = run_checks(type_or_class, params, input_shape, batch, seed)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        label = type_or_class if isinstance(type_or_class, str) else type_or_class.__name__
        raise AssertionError(f"check_layer({label!r}, input_shape={list(shape)}): " + "; ".join(f"{r.name} failed: {r.detail}" for r in failed))
    return results
