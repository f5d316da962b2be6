"""The conformance kit: every registered layer type passes it, and each check catches what it names."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.plugins import registry
from cnnkit.errors import RegistryError, SpecError
from cnnkit.layers import Layer, LayerParams, Weight
from cnnkit.testing import check_layer, run_checks

# Params (and input shapes) that make a small but non-trivial instance of each known type. A newly
# registered type gets {} and the default input shapes; if it needs more, add it here.
CASES: dict[str, list[tuple[dict, tuple[int, ...] | None]]] = {
    "conv2d": [({"filters": 3, "kernel_size": 3, "padding": "same"}, None), ({"filters": 2, "kernel_size": 3, "stride": 2, "use_bias": False}, (2, 7, 7))],
    "dense": [({"units": 5}, (7,))],
    "maxpool2d": [({"pool_size": 2}, None), ({"pool_size": 3, "stride": 2}, (2, 7, 7))],
    "softmax": [({}, (6,))],
    "batchnorm2d": [({}, None), ({"momentum": 0.3, "eps": 1e-3}, (2, 3, 5))],
    "leaky_relu": [({"negative_slope": 0.2}, None)],
    "dropout": [({}, None), ({"rate": 0.2}, (7,))],
    "avgpool2d": [({}, None), ({"pool_size": 3, "stride": 2, "padding": 1}, (2, 7, 7)), ({"pool_size": 3, "stride": 1, "padding": 1, "count_include_pad": False}, (2, 5, 6))],
}
REGISTERED = sorted({e.type for e in registry.list_layers()})
PARAMS = [(t, p, s) for t in REGISTERED for p, s in CASES.get(t, [({}, None)])]


@pytest.mark.parametrize("layer_type, params, input_shape", PARAMS, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(PARAMS)])
def test_every_registered_layer_type_conforms(layer_type, params, input_shape):
    status = {s.entry.type: s for s in registry.load_all()}[layer_type]
    if status.cls is None:
        pytest.fail(f"registered layer type {layer_type!r} cannot be loaded: {status.error}")
    results = {r.name: r for r in check_layer(layer_type, params, input_shape)}
    # Only a layer whose batch_coupling is "whole" skips the training split; every built-in splits.
    assert results.pop("training split").status == "pass"
    # Only a layer that asks for ctx.rng (dropout) is checked for randomness.
    randomness = results.pop("randomness")
    assert randomness.status == ("pass" if layer_type == "dropout" else "skip"), randomness.detail
    # The example plugin teaches the current contract, so no layer gets the older contract's note.
    assert [r.status for r in results.values()] == ["pass"] * len(results), [r for r in results.values() if r.status != "pass"]


# ---------------------------------------------------------------------------------------------------
# Each check fails on the defect it is named for (layers defined here, not registered). The same
# defects in layers written for the older contract: tests/test_conformance_legacy.py.


class Good(Layer):
    """y = x * w + b per channel: correct in every respect, the base the broken variants change."""

    def weights(self, input_shape):
        c = (input_shape[0],)
        return {"w": Weight(c, lambda rng, shape: rng.normal(size=shape)), "b": Weight(c)}

    def forward(self, weights, x, ctx):
        w, b = weights["w"][:, None, None], weights["b"][:, None, None]

        def backprop(dy):
            return dy * w, {"w": (dy * x).sum(axis=(0, 2, 3)), "b": dy.sum(axis=(0, 2, 3))}

        return x * w + b, backprop


class WrongInputGradient(Good):
    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return y, lambda dy: (backprop(dy)[0] * 1.01, backprop(dy)[1])


class MissingWeightGradient(Good):
    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return y, lambda dy: (backprop(dy)[0], {"w": backprop(dy)[1]["w"]})


class WrongShape(Good):
    def output_shape(self, input_shape):
        return (input_shape[0] + 1, *input_shape[1:])


class Upcasts(Good):
    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return y.astype(np.float64), backprop


class BatchDependent(Good):
    """Normalizes by the batch mean even in inference: a sample's output depends on its batch."""

    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return y - y.mean(axis=0, keepdims=True), backprop


class BatchMeanInTraining(Good):
    """Claims per_sample (the default) but centres on the batch mean in training (batch norm's way)."""

    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return (y - y.mean(axis=0, keepdims=True) if ctx.train else y), backprop


class RunningMeanInTraining(Good):
    """Claims per_sample but, like batch norm, writes a running statistic in place in training:
    outputs are per-sample, yet parts of a batch run at once would race on that weight."""

    def weights(self, input_shape):
        return {**super().weights(input_shape), "running_mean": Weight((input_shape[0],), trainable=False)}

    def forward(self, weights, x, ctx):
        if ctx.train:
            weights["running_mean"] += 0.1 * (x.mean(axis=(0, 2, 3)) - weights["running_mean"])
        return super().forward(weights, x, ctx)


class Noisy(Good):
    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        return y + np.random.default_rng().normal(size=y.shape).astype(y.dtype) * 1e-3, backprop


class MutatesInInference(Good):
    def forward(self, weights, x, ctx):
        weights["b"] += 1
        return super().forward(weights, x, ctx)


class RandomGood(Good):
    """Good times a dropout-like mask from the context's generator: correct."""

    def mask(self, x, ctx):
        return (ctx.rng.random(x.shape) < 0.7).astype(x.dtype)

    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        if not ctx.train:
            return y, backprop
        keep = self.mask(x, ctx)
        return y * keep, lambda dy: backprop(dy * keep)


class IgnoresItsGenerator(RandomGood):
    """Asks for ctx.rng but draws the same mask every call (the dropout issue 9 found possible)."""

    def mask(self, x, ctx):
        ctx.rng  # noqa: B018 (asked for, then ignored)
        return (np.random.default_rng(0).random(x.shape) < 0.7).astype(x.dtype)


class DrawsFromGlobalState(RandomGood):
    def mask(self, x, ctx):
        ctx.rng  # noqa: B018
        return (np.random.default_rng().random(x.shape) < 0.7).astype(x.dtype)


class MaskAcrossTheBatch(RandomGood):
    """One mask for the whole batch, drawn against the batch's last sample: not per-sample."""

    def mask(self, x, ctx):
        return (ctx.rng.random(x.shape[1:]) < x[-1] + 0.5).astype(x.dtype)


class PerPartWritesInPlace(RunningMeanInTraining):
    """Claims per_part, yet writes its state in place instead of reporting it with ctx.update."""

    batch_coupling = "per_part"


class PerPartReportsATrainedWeight(Good):
    batch_coupling = "per_part"

    def forward(self, weights, x, ctx):
        if ctx.train:
            ctx.update("b", weights["b"] + 1)
        return super().forward(weights, x, ctx)


class BadInit(Good):
    def weights(self, input_shape):
        return {**super().weights(input_shape), "w": Weight((input_shape[0],), lambda rng, shape: np.ones(shape[0] + 1))}


class BadDescription(Good):
    def weights(self, input_shape):
        return {"w": (input_shape[0],)}


class TrainsItsState(Good):
    def weights(self, input_shape):
        return {**super().weights(input_shape), "b": Weight((input_shape[0],), trainable=False)}


@pytest.mark.parametrize(
    "cls, check, message",
    [
        (WrongInputGradient, "gradients (train)", "gradient of input differs from finite differences"),
        (MissingWeightGradient, "gradients (train)", "backprop returned no gradient for weight 'b'"),
        (WrongShape, "output shape", "returned shape [3, 3, 8, 8], but output_shape([3, 8, 8]) says [3, 4, 8, 8]"),
        (Upcasts, "output shape", "turned float32 input into float64"),
        (BatchDependent, "batch independence", "sample 0 of a batch of 3 differs from that sample run alone"),
        (BatchMeanInTraining, "training split", "in training mode, the output of the first sample run alone differs from its rows in the whole batch (a batch of 3 split into 1 + 2"),
        (RunningMeanInTraining, "training split", "forward in training mode changed weights ['running_mean'], but batch_coupling 'per_sample' says"),
        (Noisy, "determinism", "two forward passes (inference mode)"),
        (MutatesInInference, "determinism", "forward in inference mode changed weights ['b']"),
        (IgnoresItsGenerator, "randomness", "four generator seeds gave identical training outputs"),
        (DrawsFromGlobalState, "determinism", "two forward passes (train mode) on the same input and generator seed and weights differ"),
        (MaskAcrossTheBatch, "training split", "with a fixed generator, the first sample's output changed when the other samples changed"),
        (PerPartWritesInPlace, "training split", "forward in training mode changed weights ['running_mean'], but batch_coupling 'per_part' says"),
        (PerPartReportsATrainedWeight, "training split", "forward reported updates of ['b'], which are not non-trainable weights ([])"),
        (BadInit, "weights", "the initial 'w' has shape [4], the layer declares [3]"),
        (BadDescription, "weights", "must map names to Weight(shape=tuple of positive ints, ...). Received: 'w': (3,)"),
        (TrainsItsState, "gradients (train)", "backprop returned gradients for non-trainable weights ['b']"),
    ],
)
def test_each_check_catches_its_defect(cls, check, message):
    _, results = run_checks(cls)
    outcome = {r.name: r for r in results}[check]
    assert outcome.status == "fail" and message in outcome.detail, outcome
    with pytest.raises(AssertionError, match=rf"check_layer\('{cls.__name__}', input_shape=\[3, 8, 8\]\): .*{check.replace('(', '.').replace(')', '.')} failed"):
        check_layer(cls)


def test_a_correct_unregistered_class_passes_and_skips_only_the_bundle_and_randomness_checks():
    results = {r.name: r for r in check_layer(Good)}
    assert results.pop("bundle round trip").status == "skip"
    assert results.pop("randomness").status == "skip"  # it never asks for ctx.rng
    assert results["layer contract"].detail == "weights() + forward(weights, x, ctx), batch_coupling 'per_sample'"
    assert {r.status for r in results.values()} == {"pass"}


def test_the_training_split_is_skipped_when_not_claimed_or_not_possible():
    class Whole(Good):
        batch_coupling = "whole"

    split = {r.name: r for r in check_layer(Whole)}["training split"]
    assert (split.status, split.detail) == ("skip", "batch_coupling is 'whole', so a model never splits a training batch through this layer")
    split = {r.name: r for r in check_layer(Good, batch=1)}["training split"]
    assert (split.status, split.detail) == ("skip", "a batch of 1 cannot be split; use a batch of 2 or more")


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(SpecError, match=r"conv2d params\.filters: required field is missing"):
        check_layer("conv2d", {"kernel_size": 3})
    with pytest.raises(SpecError, match=r"dense rejects input shape \[3, 8, 8\]: dense expects a flat input"):
        check_layer("dense", {"units": 2}, (3, 8, 8))
    with pytest.raises(RegistryError, match="unknown layer type 'nope'"):
        check_layer("nope")
    with pytest.raises(RegistryError, match="needs a layer type name or a Layer subclass"):
        check_layer(int)


class NotALayerContract(Layer):
    class Params(LayerParams):
        type: str = "x"

    def forward(self, weights, x, ctx):
        return x, lambda dy: (dy, {})


def test_a_class_breaking_the_static_contract_is_rejected_before_running():
    with pytest.raises(RegistryError, match="breaks the layer contract: NotALayerContract.Params must not declare a field named 'type'"):
        check_layer(NotALayerContract)


def test_a_random_layer_passes_every_check_with_fixed_generators():
    results = {r.name: r for r in check_layer(RandomGood)}
    assert results.pop("bundle round trip").status == "skip"
    assert results["randomness"].detail == "the same generator seed repeats the output; different seeds draw different ones"
    assert results["training split"].detail.startswith("with a fixed generator, the first sample's output and gradients ignore the other samples")
    assert {r.status for r in results.values()} == {"pass"}


def test_an_unknown_batch_coupling_is_rejected_before_running():
    class Diagonal(Good):
        batch_coupling = "per_pixel"

    with pytest.raises(RegistryError, match="Diagonal.batch_coupling must be one of 'per_sample', 'per_part', 'whole'. Received: 'per_pixel'"):
        check_layer(Diagonal)
