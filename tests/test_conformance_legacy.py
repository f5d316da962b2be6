"""Layers written for the older layer contract keep working: the conformance kit checks them through
their adapter (cnnkit.layers.legacy) and catches the same defects, and such a plugin trains exactly as
the current-contract layer with the same math does.

The older contract, as cnnkit 0.1's README taught it: ``weight_shapes`` + ``init_weights`` +
``non_trainable``, ``forward(weights, x, train)`` with optional keywords ``input_grad``, ``rng`` and
``updates`` found by signature, and the flags ``per_sample_in_training`` / ``per_part_in_training``.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.layers import Layer
from cnnkit.layers.legacy import DEPRECATION, LegacyLayer, adapt, is_legacy
from cnnkit.testing import check_layer, run_checks
from fakeplugins import write_dist


# ---------------------------------------------------------------------------------------------------
# Each check fails on the defect it is named for (older-contract layers defined here, not registered).


class Good(Layer):
    """y = x * w + b per channel: correct in every respect, the base the broken variants change."""

    per_sample_in_training = True

    def weight_shapes(self, input_shape):
        return {"w": (input_shape[0],), "b": (input_shape[0],)}

    def init_weights(self, input_shape, rng):
        return {"w": rng.normal(size=input_shape[0]).astype(np.float32), "b": np.zeros(input_shape[0], np.float32)}

    def forward(self, weights, x, train):
        w, b = weights["w"][:, None, None], weights["b"][:, None, None]

        def backprop(dy):
            return dy * w, {"w": (dy * x).sum(axis=(0, 2, 3)), "b": dy.sum(axis=(0, 2, 3))}

        return x * w + b, backprop


class WrongInputGradient(Good):
    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return y, lambda dy: (backprop(dy)[0] * 1.01, backprop(dy)[1])


class MissingWeightGradient(Good):
    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return y, lambda dy: (backprop(dy)[0], {"w": backprop(dy)[1]["w"]})


class WrongShape(Good):
    def output_shape(self, input_shape):
        return (input_shape[0] + 1, *input_shape[1:])


class Upcasts(Good):
    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return y.astype(np.float64), backprop


class BatchDependent(Good):
    """Normalizes by the batch mean even in inference: a sample's output depends on its batch."""

    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return y - y.mean(axis=0, keepdims=True), backprop


class BatchMeanInTraining(Good):
    """Claims per_sample_in_training but centres on the batch mean in training (batch norm's way)."""

    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return (y - y.mean(axis=0, keepdims=True) if train else y), backprop


class RunningMeanInTraining(Good):
    """Claims per_sample_in_training but, like batch norm, updates a running statistic in training:
    outputs are per-sample, yet parts of a batch run at once would race on that weight."""

    non_trainable = ("running_mean",)

    def weight_shapes(self, input_shape):
        return {**super().weight_shapes(input_shape), "running_mean": (input_shape[0],)}

    def init_weights(self, input_shape, rng):
        return {**super().init_weights(input_shape, rng), "running_mean": np.zeros(input_shape[0], np.float32)}

    def forward(self, weights, x, train):
        if train:
            weights["running_mean"] += 0.1 * (x.mean(axis=(0, 2, 3)) - weights["running_mean"])
        return super().forward(weights, x, train)


class Noisy(Good):
    def forward(self, weights, x, train):
        y, backprop = super().forward(weights, x, train)
        return y + np.random.default_rng().normal(size=y.shape).astype(y.dtype) * 1e-3, backprop


class MutatesInInference(Good):
    def forward(self, weights, x, train):
        weights["b"] += 1
        return super().forward(weights, x, train)


class RandomGood(Good):
    """Good times a dropout-like mask from the generator it is given: correct."""

    def forward(self, weights, x, train, *, rng=None):
        y, backprop = super().forward(weights, x, train)
        if not train:
            return y, backprop
        keep = (rng.random(x.shape) < 0.7).astype(x.dtype)
        return y * keep, lambda dy: backprop(dy * keep)


class IgnoresItsGenerator(RandomGood):
    """Takes rng but draws the same mask every call (the dropout issue 9 found possible)."""

    def forward(self, weights, x, train, *, rng=None):
        return super().forward(weights, x, train, rng=np.random.default_rng(0))


class DrawsFromGlobalState(RandomGood):
    def forward(self, weights, x, train, *, rng=None):
        return super().forward(weights, x, train, rng=np.random.default_rng())


class MaskAcrossTheBatch(RandomGood):
    """One mask for the whole batch, drawn against the batch's last sample: not per-sample."""

    def forward(self, weights, x, train, *, rng=None):
        y, backprop = Good.forward(self, weights, x, train)
        if not train:
            return y, backprop
        keep = (rng.random(x.shape[1:]) < x[-1] + 0.5).astype(x.dtype)
        return y * keep, lambda dy: backprop(dy * keep)


class PerPartWritesInPlace(RunningMeanInTraining):
    """Claims per_part_in_training and accepts updates, yet still writes its state in place."""

    per_sample_in_training = False
    per_part_in_training = True

    def forward(self, weights, x, train, *, updates=None):
        return super().forward(weights, x, train)


class BadInit(Good):
    def init_weights(self, input_shape, rng):
        return {"w": np.ones(input_shape[0] + 1, np.float32), "b": np.zeros(input_shape[0], np.float32)}


class TrainsItsState(Good):
    non_trainable = ("b",)


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
        (BadInit, "weights", "the initial 'w' has shape [4], the layer declares [3]"),
        (TrainsItsState, "gradients (train)", "backprop returned gradients for non-trainable weights ['b']"),
    ],
)
def test_each_check_catches_its_defect(cls, check, message):
    _, results = run_checks(cls)
    outcome = {r.name: r for r in results}[check]
    assert outcome.status == "fail" and message in outcome.detail
    with pytest.raises(AssertionError, match=rf"check_layer\('{cls.__name__}', input_shape=\[3, 8, 8\]\): .*{check.replace('(', '.').replace(')', '.')} failed"):
        check_layer(cls)


def test_a_correct_unregistered_class_passes_with_a_note_and_skips_only_the_bundle_and_randomness_checks():
    results = {r.name: r for r in check_layer(Good)}
    assert results.pop("bundle round trip").status == "skip"
    assert results.pop("randomness").status == "skip"  # it takes no rng
    note = results.pop("layer contract")
    assert (note.status, note.detail) == ("note", DEPRECATION)
    assert {r.status for r in results.values()} == {"pass"}


def test_the_training_split_is_skipped_when_not_claimed_or_not_possible():
    class Undeclared(Good):
        per_sample_in_training = False

    split = {r.name: r for r in check_layer(Undeclared)}["training split"]
    assert (split.status, split.detail) == ("skip", "batch_coupling is 'whole', so a model never splits a training batch through this layer")
    split = {r.name: r for r in check_layer(Good, batch=1)}["training split"]
    assert (split.status, split.detail) == ("skip", "a batch of 1 cannot be split; use a batch of 2 or more")


def test_a_random_layer_passes_every_check_with_fixed_generators():
    results = {r.name: r for r in check_layer(RandomGood)}
    assert results.pop("bundle round trip").status == "skip"
    assert results.pop("layer contract").status == "note"
    assert results["randomness"].detail == "the same generator seed repeats the output; different seeds draw different ones"
    assert results["training split"].detail.startswith("with a fixed generator, the first sample's output and gradients ignore the other samples")
    assert {r.status for r in results.values()} == {"pass"}


def test_a_per_part_layer_with_state_must_accept_updates():
    from cnnkit.plugins.registry import contract_problem

    class PerPartInPlace(RunningMeanInTraining):
        per_sample_in_training = False
        per_part_in_training = True

    assert "sets per_part_in_training and has non_trainable weights, so its forward must accept the keyword 'updates'" in contract_problem(PerPartInPlace)
    assert contract_problem(PerPartWritesInPlace) is None  # accepts it (check_layer then catches the in-place write)


# ---------------------------------------------------------------------------------------------------
# An older-contract plugin package trains exactly as before. Its layers are the built-in batchnorm2d,
# dropout and dense as they were written for that contract (updates=, rng=, input_grad=, the flags):
# through the adapter they must give the current built-ins' weights, bit for bit, with threads.

OLD_LAYERS = '''
"""batchnorm2d, dropout and dense as cnnkit 0.1's README taught a plugin to write them."""
import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from cnnkit.layers import Layer, LayerParams
from cnnkit.layers.base import init_kernel


class OldBatchNorm(Layer):
    class Params(LayerParams):
        momentum: float = Field(0.1, gt=0.0, le=1.0)
        eps: PositiveFloat = 1e-5

    non_trainable = ("running_mean", "running_var")
    per_part_in_training = True

    def weight_shapes(self, input_shape):
        c = input_shape[0]
        return {"gamma": (c,), "beta": (c,), "running_mean": (c,), "running_var": (c,)}

    def init_weights(self, input_shape, rng):
        c = input_shape[0]
        ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        return {"gamma": ones, "beta": zeros, "running_mean": zeros.copy(), "running_var": ones.copy()}

    def forward(self, weights, x, train, *, updates=None):
        axes = (0, 2, 3)
        x = np.ascontiguousarray(x)
        dtype = x.dtype.type
        count = x.shape[0] * x.shape[2] * x.shape[3]
        gamma = weights["gamma"].astype(x.dtype, copy=False)
        if train and count:
            mean = x.mean(axis=axes)
            centered = x - mean[:, None, None]
            var = np.einsum("nchw,nchw->c", centered, centered) / dtype(count)
            unbiased = var * dtype(count / (count - 1)) if count > 1 else var
            m = self.params.momentum
            new = {"running_mean": (1 - m) * weights["running_mean"] + m * mean, "running_var": (1 - m) * weights["running_var"] + m * unbiased}
            if updates is None:
                for name, value in new.items():
                    weights[name][...] = value
            else:
                updates.update(new)
        else:
            mean, var = weights["running_mean"].astype(x.dtype, copy=False), weights["running_var"].astype(x.dtype, copy=False)
            centered = x - mean[:, None, None]
        inv_std = (1.0 / np.sqrt(var + self.params.eps)).astype(x.dtype, copy=False)
        scale = gamma * inv_std
        y = centered * scale[:, None, None]
        y += weights["beta"].astype(x.dtype, copy=False)[:, None, None]

        def backprop(dy):
            beta_grad = dy.sum(axis=axes)
            gamma_grad = np.einsum("nchw,nchw->c", dy, centered) * inv_std
            dx = dy * scale[:, None, None].astype(dy.dtype, copy=False)
            if train and count:
                n = dtype(count)
                dx -= centered * (scale * inv_std * gamma_grad / n)[:, None, None]
                dx -= (scale * beta_grad / n)[:, None, None]
            return dx, {"gamma": gamma_grad, "beta": beta_grad}

        return y, backprop


class OldDropout(Layer):
    class Params(LayerParams):
        rate: float = Field(0.5, ge=0.0, lt=1.0)

    per_sample_in_training = True

    def forward(self, weights, x, train, *, rng=None):
        rate = self.params.rate
        if not train or rate == 0.0:
            return x, lambda dy: (dy, {})
        scale = (rng.random(x.shape, dtype=np.float32) >= np.float32(rate)) * x.dtype.type(1.0 / (1.0 - rate))
        y = x * scale
        return y, lambda dy: (dy * scale, {})


class OldDense(Layer):
    class Params(LayerParams):
        units: PositiveInt

    per_sample_in_training = True

    def output_shape(self, input_shape):
        return (self.params.units,)

    def weight_shapes(self, input_shape):
        return {"kernel": (input_shape[0], self.params.units), "bias": (self.params.units,)}

    def init_weights(self, input_shape, rng):
        fan_in, units = input_shape[0], self.params.units
        return {"kernel": init_kernel(rng, (fan_in, units), fan_in, units), "bias": np.zeros(units, np.float32)}

    def forward(self, weights, x, train, input_grad=True):
        kernel = weights["kernel"]
        y = x @ kernel + weights["bias"]

        def backprop(dy):
            grads = {"kernel": (dy.T @ x).T, "bias": dy.sum(axis=0)}
            return ((kernel @ dy.T).T if input_grad else None), grads

        return y, backprop


class OldInPlaceState(OldBatchNorm):
    """Neither flag and no `updates`: writes its statistics in place, so it runs whole, in one thread."""

    per_part_in_training = False

    def forward(self, weights, x, train):
        return super().forward(weights, x, train)
'''


def _spec(bn: str, dropout: str, dense: str) -> dict:
    return {"name": "old-or-new", "input": {"shape": [1, 28, 28]},
            "layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": bn, "momentum": 0.3}, {"type": "relu"},
                       {"type": "maxpool2d"}, {"type": dropout, "rate": 0.3}, {"type": "flatten"}, {"type": dense, "units": 10}],
            "train": {"epochs": 2, "batch_size": 48, "optimizer": {"type": "adam", "lr": 0.01}, "seed": 3}}


@pytest.mark.parametrize("threads", [1, 2])
def test_an_older_contract_plugin_trains_exactly_as_the_current_builtins(plugin_dir, monkeypatch, threads):
    from cnnkit.data import Dataset
    from conftest import synthetic_images

    write_dist(plugin_dir, "fake-old", "0.1.0", {"old_bn": "fake_old:OldBatchNorm", "old_dropout": "fake_old:OldDropout", "old_dense": "fake_old:OldDense"},
               {"fake_old": OLD_LAYERS})
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    # Layer by layer: the built-ins batchnorm2d -> relu -> maxpool2d would otherwise run as one fused
    # step (cnnkit.runtime.plan), whose backward rounds differently; a plugin always runs as itself.
    monkeypatch.setenv("CNNKIT_FUSE", "0")
    images, labels = synthetic_images(144, seed=1)
    data = Dataset(images[:96], labels[:96], images[96:], labels[96:], [str(k) for k in range(10)], "synthetic")
    old = cnnkit.train(_spec("old_bn", "old_dropout", "old_dense"), data)
    new = cnnkit.train(_spec("batchnorm2d", "dropout", "dense"), data)
    assert [type(r.layer) for r in old.layers[1:]][:1] == [LegacyLayer]
    assert old.metadata["history"] == new.metadata["history"]
    for name, w in new.weights.items():
        np.testing.assert_array_equal(old.weights[name], w, err_msg=name)
    assert not np.array_equal(new.weights["1.running_mean"], np.zeros(4, np.float32))  # the statistics did move


def test_an_older_contract_layer_writing_state_in_place_still_trains_in_one_thread(plugin_dir, run_all_calls, monkeypatch):
    write_dist(plugin_dir, "fake-old", "0.1.0", {"old_in_place": "fake_old:OldInPlaceState"}, {"fake_old": OLD_LAYERS})
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    model = cnnkit.build({"input": {"shape": [1, 6, 6]}, "layers": [{"type": "old_in_place"}, {"type": "flatten"}, {"type": "dense", "units": 2}]})
    assert model.layers[0].layer.batch_coupling == "whole"
    x = np.random.default_rng(0).normal(size=(64, 1, 6, 6)).astype(np.float32)
    model.forward(x, train=False)
    assert run_all_calls == [2]  # inference splits
    before = model.weights["0.running_mean"].copy()
    model.forward(x, train=True)
    assert run_all_calls == [2]  # training runs whole, in the calling thread
    assert not np.array_equal(model.weights["0.running_mean"], before)


def test_which_classes_count_as_older_contract():
    from cnnkit.layers.batchnorm import BatchNorm2D
    from cnnkit.layers.dropout import Dropout

    assert not is_legacy(BatchNorm2D) and not is_legacy(Dropout) and not is_legacy(Good.__base__)
    assert is_legacy(Good) and is_legacy(RandomGood) and is_legacy(PerPartWritesInPlace)

    class OnlyTrainParameter(Layer):  # no flag, no weights: the third parameter's name gives it away
        def forward(self, weights, x, train):
            return x, lambda dy: (dy, {})

    assert is_legacy(OnlyTrainParameter) and adapt(OnlyTrainParameter()).batch_coupling == "whole"
