"""Winograd F(2x2, 3x3) (cnnkit/layers/kernels/winograd.py) against the naive reference convolution,
PyTorch, float64 finite differences and the conformance kit, at odd sizes; and the same bits
whatever the thread split and block size."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.layers import conv_blocks
from cnnkit.layers.base import Context
from cnnkit.layers.conv import Conv2D
from cnnkit.layers.kernels import winograd
from cnnkit.runtime import parallel
from cnnkit.testing import check_gradients, check_layer

from test_layers import _input, _weights, reference_conv2d

# (N, C, H, W, F, padding, bias): 1x1 images, one channel, batch 1, non-square, odd and even sizes,
# "valid" (no padding) and padding wider than the kernel.
CASES = [
    (1, 1, 1, 1, 1, "same", True),
    (3, 2, 6, 5, 3, "same", False),
    (9, 3, 7, 7, 4, "same", True),  # two whole chunks of 4 and a partial one
    (2, 2, 5, 8, 2, "valid", True),
    (4, 3, 4, 9, 2, 2, False),
    (1, 4, 3, 1, 5, "same", True),
    (5, 2, 14, 14, 3, 1, True),
]


@pytest.fixture
def every_conv_is_winograd(monkeypatch):
    """Route every 3x3 stride-1 convolution through the kernel, whatever its channel count and batch."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_SAVED_IN_TRAINING", -(10**9))


def run(layer, weights, x, dy, input_grad=True):
    y, backprop = layer.forward(weights, x, Context(True, input_grad=input_grad))
    dx, grads = backprop(dy)
    return {"y": y, **({"dx": dx} if input_grad else {}), **grads}


def test_the_best_specs_wide_convolutions_take_winograd_and_its_first_does_not():
    # conv 1 (1 -> 32 channels): too thin for 16 products; conv 2 and 3: 32 -> 64 -> 128 channels.
    assert [winograd.suits(c, 3, f) for c, f in [(1, 32), (32, 64), (64, 128)]] == [False, True, True]
    assert not winograd.suits(32, 5, 64)  # the seed net's 5x5 kernels keep the direct path


def test_training_takes_winograd_only_for_batches_that_save_enough_to_pay_for_the_kernel_transforms(monkeypatch):
    calls = []
    real = winograd.forward
    monkeypatch.setattr(winograd, "forward", lambda *a, **k: calls.append(a[2].shape[0]) or real(*a, **k))
    layer = Conv2D(filters=128, kernel_size=3, padding="same")  # the best net's third block: saves 185 an image
    weights = _weights(layer, (64, 7, 7))
    for n, train in [(1, True), (2, True), (3, True), (1, False)]:
        layer.forward(weights, _input((n, 64, 7, 7)), Context(train))
    assert calls == [3, 1]  # batches 1 and 2 train on the direct path; inference always takes Winograd
    assert winograd.pays_in_training(1, 14, 14)  # its second block saves 980 an image


@pytest.mark.parametrize("n, c, h, w, f, padding, bias", CASES)
def test_winograd_matches_the_reference_convolution_in_float64(every_conv_is_winograd, n, c, h, w, f, padding, bias):
    layer = Conv2D(filters=f, kernel_size=3, padding=padding, use_bias=bias)
    weights = {k: v.astype(np.float64) for k, v in _weights(layer, (c, h, w)).items()}
    x = _input((n, c, h, w), dtype=np.float64)
    y, _ = layer.forward(weights, x, Context(False))
    np.testing.assert_allclose(y, reference_conv2d(x, weights["kernel"], weights.get("bias"), 1, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, c, h, w, f, padding, bias", CASES)
def test_winograd_gradients_match_finite_differences(every_conv_is_winograd, n, c, h, w, f, padding, bias):
    layer = Conv2D(filters=f, kernel_size=3, padding=padding, use_bias=bias)
    errors = check_gradients(layer, (c, h, w), batch=min(n, 3))
    assert set(errors) == {"input", "kernel"} | ({"bias"} if bias else set())


@pytest.mark.torch
@pytest.mark.parametrize("n, c, h, w, f, padding, bias", CASES)
def test_winograd_matches_pytorch_forward_and_backward_in_float32(every_conv_is_winograd, n, c, h, w, f, padding, bias):
    torch = pytest.importorskip("torch")
    layer = Conv2D(filters=f, kernel_size=3, padding=padding, use_bias=bias)
    weights = _weights(layer, (c, h, w))
    x = _input((n, c, h, w))
    pad = {"same": 1, "valid": 0}.get(padding, padding)
    xt = torch.from_numpy(x).requires_grad_(True)
    kt = torch.from_numpy(weights["kernel"]).requires_grad_(True)
    bt = torch.from_numpy(weights["bias"]).requires_grad_(True) if bias else None
    yt = torch.nn.functional.conv2d(xt, kt, bt, padding=pad)
    dy = _input(tuple(yt.shape), seed=5)
    yt.backward(torch.from_numpy(dy))
    ours = run(layer, weights, x, dy)
    scale = max(1.0, float(np.abs(yt.detach().numpy()).max()))
    np.testing.assert_allclose(ours["y"], yt.detach().numpy(), rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(ours["dx"], xt.grad.numpy(), rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(ours["kernel"], kt.grad.numpy(), rtol=1e-4, atol=1e-4 * scale)
    if bias:
        np.testing.assert_allclose(ours["bias"], bt.grad.numpy(), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("params, input_shape", [
    ({"filters": 3, "kernel_size": 3, "padding": "same"}, (2, 5, 6)),
    ({"filters": 2, "kernel_size": 3, "use_bias": False}, (1, 4, 3)),
])
def test_winograd_convolutions_pass_the_conformance_kit(every_conv_is_winograd, params, input_shape):
    results = {r.name: r.status for r in check_layer("conv2d", params, input_shape)}
    assert results.pop("randomness") == "skip"
    assert set(results.values()) == {"pass"}


def test_the_first_layer_skips_the_input_gradient_and_keeps_the_kernel_gradient(every_conv_is_winograd):
    layer = Conv2D(filters=3, kernel_size=3, padding="same")
    weights, x = _weights(layer, (2, 6, 7)), _input((5, 2, 6, 7))
    dy = _input((5, 3, 6, 7), seed=5)
    full, lean = run(layer, weights, x, dy), run(layer, weights, x, dy, input_grad=False)
    assert set(lean) == {"y", "kernel", "bias"}
    for name, value in lean.items():
        np.testing.assert_array_equal(value, full[name], err_msg=name)


def test_the_thread_split_never_changes_a_bit(every_conv_is_winograd, monkeypatch):
    """Every product covers one group of GROUP images (the last group the rest), whatever the
    threads (chosen from the load, for a batch the model does not split): they change speed only."""
    monkeypatch.setattr(parallel, "spare_cores", lambda: True)
    monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", 1)
    layer = Conv2D(filters=4, kernel_size=3, padding="same")
    weights, x = _weights(layer, (3, 13, 9)), _input((13, 3, 13, 9))  # groups of 4, 4, 4 and 1 images
    dy = _input((13, 4, 13, 9), seed=5)
    calls: list[int] = []
    real = parallel.run_all
    monkeypatch.setattr(parallel, "run_all", lambda tasks: calls.append(len(tasks)) or real(tasks))
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    reference = run(layer, weights, x, dy)
    assert calls == []
    for threads in (2, 3, 4):
        calls.clear()
        monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
        result = run(layer, weights, x, dy)
        assert calls == [threads, threads]  # forward and backprop split
        for name, value in reference.items():
            np.testing.assert_array_equal(result[name], value, err_msg=f"{name}, {threads} threads")
