"""cnnkit-extra's layers: the cnnkit conformance kit, plain reference math, PyTorch parity, training use."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import registry
from cnnkit.data.fashion_mnist import Dataset
from cnnkit.testing import check_gradients, check_layer
from cnnkit.train import fit
from cnnkit_extra.batchnorm import BatchNorm2D
from cnnkit_extra.leaky_relu import LeakyReLU


@pytest.mark.parametrize(
    "layer_type, params, input_shape",
    [
        ("leaky_relu", {}, (3, 8, 8)),
        ("leaky_relu", {"negative_slope": 0.3}, (10,)),
        ("leaky_relu", {"negative_slope": 0.0}, (2, 4, 4)),
        ("batchnorm2d", {}, (3, 8, 8)),
        ("batchnorm2d", {"momentum": 0.5, "eps": 1e-3}, (1, 5, 5)),
        ("batchnorm2d", {"momentum": 1.0}, (4, 2, 3)),
    ],
)
def test_conformance(layer_type, params, input_shape):
    results = {r.name: r.status for r in check_layer(layer_type, params, input_shape)}
    # batchnorm2d uses batch statistics in training, so it does not claim per_sample_in_training.
    assert results.pop("training split") == ("skip" if layer_type == "batchnorm2d" else "pass")
    assert set(results.values()) == {"pass"}


def test_registered_with_this_distribution():
    entries = {e.type: e for e in registry.list_layers()}
    for layer_type in ("batchnorm2d", "leaky_relu"):
        assert (entries[layer_type].dist, entries[layer_type].version) == ("cnnkit-extra", "0.1.0")


def test_leaky_relu_matches_reference():
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 5)).astype(np.float32)
    y, backprop = LeakyReLU(negative_slope=0.2).forward({}, x, train=False)
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0.2) * x))
    dx, grads = backprop(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.where(x > 0, 1.0, np.float32(0.2)))
    assert grads == {} and y.dtype == np.float32


def test_leaky_relu_rejects_bad_params():
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\]\.negative_slope"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "leaky_relu", "negative_slope": -1}]})
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\]\.negative_slope"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "leaky_relu", "negative_slope": True}]})


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
    w = layer.init_weights((3, 4, 4), rng)
    w["gamma"][:] = [1.0, 2.0, 0.5]
    w["beta"][:] = [0.0, -1.0, 3.0]
    x = rng.normal(2.0, 3.0, (5, 3, 4, 4)).astype(np.float32)
    y, _ = layer.forward(w, x, train=True)
    np.testing.assert_allclose(y, _reference_batchnorm_train(x, w["gamma"], w["beta"], 1e-5), rtol=1e-5, atol=1e-5)
    count = 5 * 4 * 4
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) * count / (count - 1)
    np.testing.assert_allclose(w["running_mean"], 0.75 * 0 + 0.25 * mean, rtol=1e-6)
    np.testing.assert_allclose(w["running_var"], 0.75 * 1 + 0.25 * var, rtol=1e-6)
    # Inference uses the running statistics, not the batch's.
    y_eval, _ = layer.forward(w, x, train=False)
    expected = w["gamma"][:, None, None] * (x - w["running_mean"][:, None, None]) / np.sqrt(w["running_var"][:, None, None] + 1e-5) + w["beta"][:, None, None]
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_backprop_gives_no_gradient_for_running_stats():
    errors = check_gradients(BatchNorm2D(), (2, 3, 3), batch=3)
    assert set(errors) == {"input", "gamma", "beta"}


def test_batchnorm_matches_torch_over_several_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    layer = BatchNorm2D(momentum=0.1, eps=1e-5)
    w = layer.init_weights((3, 5, 5), rng)
    ref = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
    for step in range(3):
        x = rng.normal(1.0, 2.0, (4, 3, 5, 5))
        dy = rng.normal(size=x.shape)
        w64 = {k: v.astype(np.float64) for k, v in w.items()}
        y, backprop = layer.forward(w64, x, train=True)
        dx, grads = backprop(dy)
        w = {k: v.astype(np.float32) for k, v in w64.items()}
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
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    y, _ = layer.forward(w, x, train=False)
    np.testing.assert_allclose(y, ref(torch.tensor(x, dtype=torch.float64)).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("optimizer", [{"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, {"type": "adam", "lr": 0.01, "weight_decay": 0.01}])
def test_training_updates_running_stats_only_through_forward(optimizer):
    """The optimizer sees no gradient for running statistics; they follow the data, not the loss."""
    spec = {
        "input": {"shape": [1, 8, 8], "preprocess": {"divide": 1.0, "subtract": 0.0}},
        "layers": [
            {"type": "conv2d", "filters": 2, "kernel_size": 3},
            {"type": "batchnorm2d", "momentum": 0.5},
            {"type": "leaky_relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 2},
        ],
        "train": {"epochs": 2, "batch_size": 8, "optimizer": optimizer},
    }
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 32)
    images = (rng.integers(0, 50, (32, 8, 8)) + 150 * labels[:, None, None]).astype(np.uint8)
    data = Dataset(images, labels, images[:8], labels[:8], ["dark", "bright"], "synthetic")
    model = cnnkit.build(spec)
    history = fit(model, data)
    assert np.isfinite(history[-1].train_loss)
    # With momentum 0.5 and 8 batches, the running mean is dominated by the conv outputs' real mean.
    conv_out, _ = model.layers[0].layer.forward({"kernel": model.weights["0.kernel"], "bias": model.weights["0.bias"]}, model.preprocess(images), False)
    true_mean = conv_out.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(model.weights["1.running_mean"], true_mean, rtol=0.2, atol=0.5)
    assert np.all(model.weights["1.running_var"] > 0)
