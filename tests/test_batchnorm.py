"""batchnorm2d (a core layer since cnnkit-extra 0.2.0): reference math, PyTorch parity, running
statistics, and batch norm on all cores (per-part statistics, state applied in part order)."""

from __future__ import annotations

import copy

import msgpack
import numpy as np
import pytest

import cnnkit
from cnnkit import bundle
from cnnkit.data.fashion_mnist import Dataset
from cnnkit.layers import Context, conv_blocks
from cnnkit.layers.batchnorm import BatchNorm2D
from cnnkit.runtime.model import MIN_PART
from cnnkit.testing import check_gradients
from cnnkit.training import fit


def _reference_batchnorm_train(x, gamma, beta, eps):
    """Textbook batch norm, written per channel with explicit loops over channels only."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        v = x[:, c]
        y[:, c] = gamma[c] * (v - v.mean()) / np.sqrt(v.var() + eps) + beta[c]
    return y


def test_batchnorm_matches_reference_and_tracks_running_stats():
    rng = np.random.default_rng(1)
    layer = BatchNorm2D(momentum=0.25)
    w = layer.initial_weights((3, 4, 4), rng)
    w["gamma"][:] = [1.0, 2.0, 0.5]
    w["beta"][:] = [0.0, -1.0, 3.0]
    x = rng.normal(2.0, 3.0, (5, 3, 4, 4)).astype(np.float32)
    ctx = Context(True)
    y, _ = layer.forward(w, x, ctx)  # the new running statistics come back through ctx.update
    np.testing.assert_allclose(y, _reference_batchnorm_train(x, w["gamma"], w["beta"], 1e-5), rtol=1e-5, atol=1e-5)
    count = 5 * 4 * 4
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) * count / (count - 1)
    np.testing.assert_allclose(ctx.updates["running_mean"], 0.75 * 0 + 0.25 * mean, rtol=1e-6)
    np.testing.assert_allclose(ctx.updates["running_var"], 0.75 * 1 + 0.25 * var, rtol=1e-6)
    w.update(ctx.updates)
    # Inference uses the running statistics, not the batch's.
    y_eval, _ = layer.forward(w, x, Context(False))
    expected = w["gamma"][:, None, None] * (x - w["running_mean"][:, None, None]) / np.sqrt(w["running_var"][:, None, None] + 1e-5) + w["beta"][:, None, None]
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_reports_state_and_writes_nothing():
    rng = np.random.default_rng(1)
    layer = BatchNorm2D(momentum=0.25)
    w = layer.initial_weights((3, 4, 4), rng)
    x = rng.normal(2.0, 3.0, (5, 3, 4, 4)).astype(np.float32)
    before = copy.deepcopy(w)
    ctx = Context(True)
    layer.forward(w, x, ctx)
    assert all(np.array_equal(w[k], before[k]) for k in w)
    assert sorted(ctx.updates) == ["running_mean", "running_var"]
    assert [n for n, d in layer.weights((3, 4, 4)).items() if not d.trainable] == ["running_mean", "running_var"]
    with pytest.raises(ValueError, match="only training may change"):  # inference reports no state
        Context(False).update("running_mean", w["running_mean"])


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients_match_finite_differences_and_skip_running_stats(train):
    errors = check_gradients(BatchNorm2D(), (2, 3, 3), batch=3, train=train)
    assert set(errors) == {"input", "gamma", "beta"}


@pytest.mark.torch
def test_batchnorm_matches_torch_over_several_steps_then_in_inference():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    layer = BatchNorm2D(momentum=0.1, eps=1e-5)
    w = layer.initial_weights((3, 5, 5), rng)
    ref = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
    for step in range(3):
        x = rng.normal(1.0, 2.0, (4, 3, 5, 5))
        dy = rng.normal(size=x.shape)
        w64 = {k: v.astype(np.float64) for k, v in w.items()}
        ctx = Context(True)
        y, backprop = layer.forward(w64, x, ctx)
        dx, grads = backprop(dy)
        w = {k: ctx.updates.get(k, v).astype(np.float32) for k, v in w64.items()}
        xt = torch.tensor(x, requires_grad=True)
        ref.train()
        yt = ref(xt)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(grads["gamma"], ref.weight.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(grads["beta"], ref.bias.grad.numpy(), rtol=1e-9, atol=1e-10)
        ref.zero_grad()
        np.testing.assert_allclose(w["running_mean"], ref.running_mean.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w["running_var"], ref.running_var.numpy(), rtol=1e-6, atol=1e-7)
    ref.eval()
    x = rng.normal(size=(2, 3, 5, 5))
    dy = rng.normal(size=x.shape)
    y, backprop = layer.forward({k: v.astype(np.float64) for k, v in w.items()}, x, Context(False))
    dx, grads = backprop(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)  # running stats went through float32
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["gamma"], ref.weight.grad.numpy(), rtol=1e-6, atol=1e-6)


def _synthetic(n=32, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = (rng.integers(0, 50, (n, 8, 8)) + 150 * labels[:, None, None]).astype(np.uint8)
    return Dataset(images, labels, images[:8], labels[:8], ["dark", "bright"], "synthetic"), images


@pytest.mark.parametrize("optimizer", [{"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, {"type": "adam", "lr": 0.01, "weight_decay": 0.01}])
def test_training_updates_running_stats_only_through_forward(optimizer):
    """The optimizer sees no gradient for running statistics; they follow the data, not the loss."""
    spec = {
        "input": {"shape": [1, 8, 8], "preprocess": {"divide": 1.0, "subtract": 0.0}},
        "layers": [
            {"type": "conv2d", "filters": 2, "kernel_size": 3},
            {"type": "batchnorm2d", "momentum": 0.5},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 2},
        ],
        "train": {"epochs": 2, "batch_size": 8, "optimizer": optimizer},
    }
    data, images = _synthetic()
    model = cnnkit.build(spec)
    history = fit(model, data)
    assert np.isfinite(history[-1].train_loss)
    # With momentum 0.5 and 8 batches, the running mean is dominated by the conv outputs' real mean.
    conv_out, _ = model.layers[0].layer.forward({"kernel": model.weights["0.kernel"], "bias": model.weights["0.bias"]}, model.preprocess(images), Context(False))
    np.testing.assert_allclose(model.weights["1.running_mean"], conv_out.mean(axis=(0, 2, 3)), rtol=0.2, atol=0.5)
    assert np.all(model.weights["1.running_var"] > 0)


# -- batch norm on all cores --------------------------------------------------------------------------

SPLIT_SPEC = {
    "name": "bn-split",
    "input": {"shape": [1, 12, 12]},
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},  # a bias before batch norm gets a zero gradient
        {"type": "batchnorm2d"},
        {"type": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
}

# How far a batch split in two (per-part statistics) may land from the whole batch, on this test's
# i.i.d. inputs with 32 samples x 144 positions per part and channel (README, Threads): the parts'
# means and variances differ from the batch's by sampling noise of order 1/sqrt(4608).
# Measured here: logits 0.025, gradients 0.05 (first conv kernel; others <= 0.011), running
# variance 5e-6 (momentum 0.1 damps the difference).
SPLIT_LOGITS_ATOL = 0.05
SPLIT_GRADS_RTOL = 0.1  # relative to each gradient's largest entry
SPLIT_RUNNING_VAR_RTOL = 1e-3


def _step(model, x, dy, threads, monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    y, backprop = model.forward(x, train=True, logits=True, key=(1, 0))
    return y, backprop(dy)


def test_batchnorm_model_splits_training_with_per_part_statistics(monkeypatch, run_all_calls):
    rng = np.random.default_rng(0)
    n = 4 * MIN_PART
    x = rng.normal(size=(n, 1, 12, 12)).astype(np.float32)
    dy = rng.normal(size=(n, 10)).astype(np.float32)
    split, whole, halves = (cnnkit.build(SPLIT_SPEC) for _ in range(3))
    monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", 10**18)  # count the model's splits only, not the convolution's own
    y_split, g_split = _step(split, x, dy, 2, monkeypatch)
    assert run_all_calls == [2, 2]  # forward and backprop each ran as two parts, one per thread
    y_whole, g_whole = _step(whole, x, dy, 1, monkeypatch)

    # Exactly what data-parallel training without synchronised batch norm computes: each half run
    # on its own through the model, gradients summed, running statistics averaged over the halves.
    first, second = x[: n // 2], x[n // 2 :]
    state = {k: halves.weights[k].copy() for k in ("1.running_mean", "1.running_var")}
    y1, g1 = _step(halves, first, dy[: n // 2], 1, monkeypatch)
    after_first = {k: halves.weights[k].copy() for k in state}
    for k, v in state.items():
        halves.weights[k][...] = v
    y2, g2 = _step(halves, second, dy[n // 2 :], 1, monkeypatch)
    np.testing.assert_allclose(y_split, np.concatenate([y1, y2]), rtol=1e-5, atol=1e-6)
    for k in g_split:
        np.testing.assert_allclose(g_split[k], g1[k] + g2[k], rtol=1e-4, atol=1e-6)
    for k in state:
        np.testing.assert_allclose(split.weights[k], (after_first[k] + halves.weights[k]) / 2, rtol=1e-6, atol=1e-7)

    # ... which lands near the whole batch, within the documented tolerances.
    assert np.max(np.abs(y_split - y_whole)) < SPLIT_LOGITS_ATOL
    for k in g_split:
        assert np.max(np.abs(g_split[k] - g_whole[k])) < SPLIT_GRADS_RTOL * np.max(np.abs(g_whole[k])), k
    # The mean of the halves' means is the batch mean; the halves' variances miss only the spread
    # between the halves' means.
    np.testing.assert_allclose(split.weights["1.running_mean"], whole.weights["1.running_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split.weights["1.running_var"], whole.weights["1.running_var"], rtol=SPLIT_RUNNING_VAR_RTOL)


def test_batchnorm_training_gives_byte_identical_bundles_for_the_same_thread_count(monkeypatch, run_all_calls, tmp_path):
    spec = {
        "name": "bn-bytes",
        "input": {"shape": [1, 8, 8], "preprocess": {"divide": 255.0, "subtract": 0.5}},
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": "same"},
            {"type": "batchnorm2d"},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "dropout", "rate": 0.3},
            {"type": "dense", "units": 2},
        ],
        "train": {"epochs": 2, "batch_size": 2 * MIN_PART, "optimizer": {"type": "adam", "lr": 0.01}},
    }
    data, _ = _synthetic(n=4 * MIN_PART)
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    files = []
    for run in range(2):
        model = cnnkit.build(spec)
        fit(model, data)
        files.append(cnnkit.save(model, tmp_path / f"run{run}.cnnkit").read_bytes())
    assert 2 in run_all_calls  # the training batches really were split
    assert files[0] == files[1]


def test_a_bundle_recording_batchnorm2d_from_cnnkit_extra_loads_with_the_core_layer(tmp_path):
    """Before cnnkit-extra 0.2.0 batchnorm2d came from the plugin. Same type name, weights and math,
    so such bundles load with the core layer."""
    model = cnnkit.build(SPLIT_SPEC)
    model.weights["1.running_mean"][:] = [0.5, -0.5, 1.0, 0.0]
    path = cnnkit.save(model, tmp_path / "new.cnnkit")
    outer = msgpack.unpackb(path.read_bytes(), raw=False)
    payload = msgpack.unpackb(outer["payload"], raw=False)
    assert payload["providers"]["batchnorm2d"]["dist"] == "cnnkit"
    payload["providers"]["batchnorm2d"] = {"dist": "cnnkit-extra", "version": "0.1.0"}
    old = tmp_path / "old.cnnkit"
    old.write_bytes(bundle.pack(payload))
    assert bundle.read(old).providers["batchnorm2d"] == {"dist": "cnnkit-extra", "version": "0.1.0"}
    images = np.random.default_rng(0).integers(0, 255, (4, 12, 12)).astype(np.uint8)
    np.testing.assert_array_equal(cnnkit.load(old).predict_proba(images), model.predict_proba(images))


STRAY_UPDATE = '''
"""A per-part layer that reports a trainable weight as state (wrong)."""
from cnnkit.layers.batchnorm import BatchNorm2D


class StrayUpdate(BatchNorm2D):
    def forward(self, weights, x, ctx):
        y, backprop = super().forward(weights, x, ctx)
        if ctx.train:
            ctx.update("gamma", weights["gamma"] * 2)
        return y, backprop
'''


def test_a_layer_reporting_a_trainable_weight_as_state_is_a_one_line_error(monkeypatch, tmp_path):
    from fakeplugins import write_dist

    write_dist(tmp_path, "fake-stray", "0.1", {"stray_bn": "fake_stray:StrayUpdate"}, {"fake_stray": STRAY_UPDATE})
    monkeypatch.syspath_prepend(str(tmp_path))
    model = cnnkit.build({**SPLIT_SPEC, "layers": [SPLIT_SPEC["layers"][0], {"type": "stray_bn"}, *SPLIT_SPEC["layers"][2:]]})
    before = {k: v.copy() for k, v in model.weights.items()}
    with pytest.raises(cnnkit.CnnkitError, match=r"^layers\[1\] \(fake-stray:stray_bn from fake-stray 0\.1\) breaks the layer contract: forward reported ctx\.update\('gamma', \.\.\.\), but 'gamma' is a trainable weight; "
                       r"only weights declared trainable=False \('running_mean', 'running_var'\) are updated that way"):
        model.forward(np.ones((2, 1, 12, 12), np.float32), train=True)
    for k, v in before.items():  # nothing written, the running statistics included
        np.testing.assert_array_equal(model.weights[k], v)
