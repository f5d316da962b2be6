"""Built-in layers against plain reference implementations, finite differences and PyTorch.

The reference functions below are deliberately naive (explicit loops over tiny inputs): every fast
path in cnnkit/layers/ is checked against them, so they should stay obviously correct.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.layers.activations import ReLU, Softmax
from cnnkit.layers import Context, conv_blocks, conv_gemm
from cnnkit.layers.conv import Conv2D
from cnnkit.layers.dense import Dense
from cnnkit.layers.flatten import Flatten
from cnnkit.layers.pool import MaxPool2D
from cnnkit.runtime.losses import softmax_cross_entropy
from cnnkit.testing import check_gradients

# -- reference implementations ----------------------------------------------------------------------


def reference_padding(padding, size, kernel, stride):
    """(before, after) zero padding; "same" as in TensorFlow: output = ceil(size / stride), extra at the end."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return padding, padding


def reference_conv2d(x, kernel, bias, stride, padding):
    n, c, h, w = x.shape
    f, _, k, _ = kernel.shape
    ph, pw = reference_padding(padding, h, k, stride), reference_padding(padding, w, k, stride)
    padded = np.zeros((n, c, h + sum(ph), w + sum(pw)), x.dtype)
    padded[:, :, ph[0] : ph[0] + h, pw[0] : pw[0] + w] = x
    out_h = (padded.shape[2] - k) // stride + 1
    out_w = (padded.shape[3] - k) // stride + 1
    y = np.zeros((n, f, out_h, out_w), x.dtype)
    for b in range(n):
        for o in range(f):
            for i in range(out_h):
                for j in range(out_w):
                    window = padded[b, :, i * stride : i * stride + k, j * stride : j * stride + k]
                    y[b, o, i, j] = (window * kernel[o]).sum() + (bias[o] if bias is not None else 0.0)
    return y


def reference_maxpool2d(x, pool, stride):
    n, c, h, w = x.shape
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    y = np.zeros((n, c, out_h, out_w), x.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(out_h):
                for j in range(out_w):
                    y[b, ch, i, j] = x[b, ch, i * stride : i * stride + pool, j * stride : j * stride + pool].max()
    return y


def reference_dense(x, kernel, bias):
    n, units = x.shape[0], kernel.shape[1]
    y = np.zeros((n, units), x.dtype)
    for b in range(n):
        for u in range(units):
            y[b, u] = sum(x[b, i] * kernel[i, u] for i in range(x.shape[1])) + (bias[u] if bias is not None else 0.0)
    return y


def reference_softmax(x):
    y = np.zeros_like(x)
    for b in range(x.shape[0]):
        row = [math.exp(v - max(x[b])) for v in x[b]]
        y[b] = [v / sum(row) for v in row]
    return y


def _weights(layer, input_shape, seed=0):
    rng = np.random.default_rng(seed)
    weights = layer.initial_weights(input_shape, rng)
    for w in weights.values():  # non-zero biases, so they are visible in the outputs
        w += rng.normal(0, 0.1, w.shape).astype(w.dtype)
    return weights


def _input(shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


CONV_CASES = [
    # (channels, height, width, filters, kernel, stride, padding, use_bias)
    (1, 7, 7, 2, 3, 1, "same", True),
    (2, 6, 5, 3, 2, 1, "same", True),  # even kernel: "same" pads one more at the end
    (3, 7, 6, 2, 3, 2, "same", True),
    (2, 8, 7, 2, 4, 3, "same", False),
    (2, 7, 7, 3, 3, 1, "valid", True),
    (1, 9, 8, 2, 5, 2, "valid", True),
    (2, 5, 6, 2, 3, 1, 2, True),  # integer padding
    (1, 5, 5, 1, 1, 1, "valid", True),  # 1x1 kernel
    (3, 6, 6, 2, 3, 3, 1, False),
]


@pytest.mark.parametrize("c,h,w,filters,k,stride,padding,use_bias", CONV_CASES)
def test_conv2d_forward_matches_reference(c, h, w, filters, k, stride, padding, use_bias):
    layer = Conv2D(filters=filters, kernel_size=k, stride=stride, padding=padding, use_bias=use_bias)
    weights = _weights(layer, (c, h, w))
    x = _input((3, c, h, w))
    y, _ = layer.forward(weights, x, Context(False))
    expected = reference_conv2d(x, weights["kernel"], weights.get("bias"), stride, padding)
    assert y.shape == (3, *layer.output_shape((c, h, w)))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,h,w,filters,k,stride,padding,use_bias", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(c, h, w, filters, k, stride, padding, use_bias):
    layer = Conv2D(filters=filters, kernel_size=k, stride=stride, padding=padding, use_bias=use_bias)
    errors = check_gradients(layer, (c, h, w))
    assert set(errors) == {"input", "kernel"} | ({"bias"} if use_bias else set())


def test_conv2d_without_input_grad_gives_the_same_weight_gradients():
    layer = Conv2D(filters=3, kernel_size=3, padding="same")
    weights = _weights(layer, (2, 6, 6))
    x = _input((4, 2, 6, 6))
    y, full = layer.forward(weights, x, Context(True))
    y_lean, lean = layer.forward(weights, x, Context(True, input_grad=False))
    dy = _input(y.shape, seed=5)
    dx, grads = full(dy)
    dx_lean, grads_lean = lean(dy)
    np.testing.assert_array_equal(y, y_lean)
    assert dx is not None and dx_lean is None
    for name in grads:
        # float32, and the two paths sum in different orders (x patches vs dy patches)
        np.testing.assert_allclose(grads_lean[name], grads[name], rtol=1e-5, atol=1e-6)


STRATEGIES = ["full-im2col", "shared-rows", "batched"]


def _force_stride1_strategy(monkeypatch, strategy: str, block_bytes: int | None) -> None:
    """Make every stride-1 convolution copy the full im2col image by image, share one kernel row's
    shifted rows, or put a block's images side by side in one product (``conv_gemm``), and shrink
    the blocks to ``block_bytes`` if given."""
    monkeypatch.setattr(conv_blocks, "copies_kernel_rows", lambda *shape: strategy != "shared-rows")
    monkeypatch.setattr(conv_gemm, "MAX_WINDOW", 10**9 if strategy == "batched" else 0)
    if block_bytes:
        monkeypatch.setattr(conv_blocks, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(conv_blocks, "PIECE_BYTES", block_bytes)


@pytest.mark.parametrize("block_bytes", [None, 700], ids=["whole-images", "tiny-blocks"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("c,h,w,filters,k,stride,padding,use_bias", [case for case in CONV_CASES if case[5] == 1])
def test_conv2d_stride1_strategies_and_blocks(monkeypatch, strategy, block_bytes, c, h, w, filters, k, stride, padding, use_bias):
    """Stride-1 convolution copies either the full im2col or only one kernel row's shifted input
    rows (``copies_kernel_rows`` picks by shape), a block of images at a time, image by image or
    (small images, ``conv_gemm``) side by side in one product. Every strategy,
    with whole images per block and with tiny blocks that cut through rows, must match the
    reference, finite differences, and the first-layer path that skips the input gradient."""
    _force_stride1_strategy(monkeypatch, strategy, block_bytes)
    layer = Conv2D(filters=filters, kernel_size=k, stride=stride, padding=padding, use_bias=use_bias)
    weights = _weights(layer, (c, h, w))
    x = _input((9, c, h, w))  # two whole chunks of 4 and a partial one
    y, full = layer.forward(weights, x, Context(True))
    np.testing.assert_allclose(y, reference_conv2d(x, weights["kernel"], weights.get("bias"), stride, padding), rtol=1e-5, atol=1e-5)
    check_gradients(layer, (c, h, w), batch=3)
    _, lean = layer.forward(weights, x, Context(True, input_grad=False))
    dy = _input(y.shape, seed=5)
    (_, grads), (dx_lean, grads_lean) = full(dy), lean(dy)
    assert dx_lean is None and set(grads_lean) == set(grads)
    for name in grads:
        np.testing.assert_allclose(grads_lean[name], grads[name], rtol=1e-5, atol=1e-5)


def test_conv2d_batched_blocks_match_image_by_image_and_never_change_results(monkeypatch):
    """Side by side in one product (``conv_gemm``), 13 images (three whole chunks and a partial
    one): the same values as image by image, and the same bits whatever the block size."""
    layer = Conv2D(filters=4, kernel_size=3, padding="same")
    weights = _weights(layer, (3, 6, 5))
    x, dy = _input((13, 3, 6, 5)), _input((13, 4, 6, 5), seed=5)

    def run(strategy, block_bytes, input_grad=True):
        _force_stride1_strategy(monkeypatch, strategy, block_bytes)
        y, backprop = layer.forward(weights, x, Context(True, input_grad=input_grad))
        dx, grads = backprop(dy)
        return {"y": y, **({"dx": dx} if input_grad else {}), **grads}

    for input_grad in (True, False):
        batched = run("batched", None, input_grad)
        for name, value in run("full-im2col", None, input_grad).items():
            np.testing.assert_allclose(batched[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
        for block_bytes in (1, 3000, 10**9):  # a chunk per block, a few chunks, all images
            for name, value in run("batched", block_bytes, input_grad).items():
                np.testing.assert_array_equal(value, batched[name], err_msg=f"{name}, block_bytes={block_bytes}")


def test_the_best_specs_small_convolutions_go_side_by_side():
    """README "Speed": the best spec's 14x14 and 7x7 convolutions take conv_gemm, its 28x28 one does not."""
    model = cnnkit.build(Path(__file__).parent.parent / "specs" / "fashion_mnist_best.json")
    picks = []
    for r in model.layers:
        if r.type == "conv2d":
            _, pad_w, out_h, _ = r.layer._geometry(r.input_shape)
            picks.append(conv_gemm.uses_batched(r.input_shape[0], r.layer.params.kernel_size, r.layer.params.filters, out_h * (r.input_shape[2] + sum(pad_w))))
    assert picks == [False, True, True]


def test_conv2d_picks_the_copy_that_moves_fewer_rows():
    # C*k*k copied rows (full im2col) against C*k copied + 2*k*F partial-output rows (shared rows)
    assert conv_blocks.copies_kernel_rows(1, 5, 6)  # seed conv1: 25 < 5 + 60
    assert not conv_blocks.copies_kernel_rows(6, 5, 6)  # seed conv2: 150 > 30 + 60
    assert conv_blocks.copies_kernel_rows(32, 3, 64)  # a wide layer: 288 < 96 + 384


_byte_bounds = getattr(np.lib, "array_utils", np).byte_bounds  # numpy >= 2 moved it


@pytest.mark.parametrize("block_bytes", [None, 700], ids=["whole-images", "tiny-blocks"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "c,h,w,filters,k,stride,padding,use_bias",
    [
        *(case for case in CONV_CASES if case[5] == 1),
        (2, 1, 1, 2, 3, 1, "same", True),  # 1x1 images
        (2, 3, 4, 3, 5, 1, 1, False),  # the kernel covers the whole padded height
        (1, 2, 7, 2, 2, 1, 3, True),  # integer padding larger than the kernel, H != W
    ],
)
def test_conv2d_reads_only_inside_its_arrays(monkeypatch, strategy, block_bytes, c, h, w, filters, k, stride, padding, use_bias):
    """as_strided views are not bounds-checked: one reaching past its array reads whatever memory
    follows, and the result can still look right (the stray values land in cropped columns or meet
    zeros), so the reference comparisons above cannot see it. Check every view's extent instead."""
    real_as_strided = conv_blocks.as_strided

    def checked_as_strided(array, shape, strides, **kwargs):
        view = real_as_strided(array, shape, strides, **kwargs)
        owner = array
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        (low, high), (owner_low, owner_high) = _byte_bounds(view), _byte_bounds(owner)
        assert view.size == 0 or owner_low <= low <= high <= owner_high, f"view {shape} with strides {strides} reaches {owner_low - low} bytes before, {high - owner_high} bytes past its array"
        return view

    monkeypatch.setattr(conv_blocks, "as_strided", checked_as_strided)
    monkeypatch.setattr(conv_gemm, "as_strided", checked_as_strided)
    _force_stride1_strategy(monkeypatch, strategy, block_bytes)
    layer = Conv2D(filters=filters, kernel_size=k, stride=stride, padding=padding, use_bias=use_bias)
    weights = _weights(layer, (c, h, w))
    x = _input((9, c, h, w))  # two whole chunks of 4 and a partial one
    for input_grad in (True, False):
        y, backprop = layer.forward(weights, x, Context(True, input_grad=input_grad))
        backprop(_input(y.shape, seed=5))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_keeps_float64_through_forward_and_backprop(stride):
    layer = Conv2D(filters=3, kernel_size=3, stride=stride, padding="same")
    weights = {name: w.astype(np.float64) for name, w in _weights(layer, (2, 6, 5)).items()}
    x = _input((2, 2, 6, 5), dtype=np.float64)
    y, backprop = layer.forward(weights, x, Context(True))
    dy = _input(y.shape, seed=5, dtype=np.float64)
    dx, grads = backprop(dy)
    assert y.dtype == dx.dtype == grads["kernel"].dtype == grads["bias"].dtype == np.float64
    _, lean = layer.forward(weights, x, Context(True, input_grad=False))
    assert all(g.dtype == np.float64 for g in lean(dy)[1].values())


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_on_integer_pixels_computes_in_the_kernels_float_type(stride):
    """Raw uint8 pixels give what their float values give (NumPy's promotion, float32 here), not
    a kernel cast to uint8."""
    layer = Conv2D(filters=2, kernel_size=3, stride=stride, padding="same")
    weights = _weights(layer, (1, 5, 6))
    pixels = np.random.default_rng(2).integers(0, 256, (2, 1, 5, 6)).astype(np.uint8)
    y, _ = layer.forward(weights, pixels, Context(False))
    assert y.dtype == np.float32
    expected = reference_conv2d(pixels.astype(np.float64), weights["kernel"], weights["bias"], stride, "same")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-3)


POOL_CASES = [
    # (channels, height, width, pool_size, stride)
    (2, 6, 6, 2, None),
    (2, 7, 5, 2, None),  # odd sizes: the last row/column is dropped (floor mode)
    (1, 7, 7, 3, 2),  # overlapping windows
    (3, 8, 8, 3, 1),
    (2, 9, 9, 2, 3),  # gaps between windows
    (1, 5, 5, 5, None),
]


@pytest.mark.parametrize("c,h,w,pool,stride", POOL_CASES)
def test_maxpool2d_forward_matches_reference(c, h, w, pool, stride):
    layer = MaxPool2D(pool_size=pool, stride=stride)
    x = _input((3, c, h, w))
    y, _ = layer.forward({}, x, Context(False))
    np.testing.assert_array_equal(y, reference_maxpool2d(x, pool, stride or pool))
    assert y.shape == (3, *layer.output_shape((c, h, w)))


@pytest.mark.parametrize("c,h,w,pool,stride", POOL_CASES)
def test_maxpool2d_gradients_match_finite_differences(c, h, w, pool, stride):
    check_gradients(MaxPool2D(pool_size=pool, stride=stride), (c, h, w))


def test_maxpool2d_routes_a_tie_to_the_first_maximum_only():
    x = np.zeros((1, 1, 2, 2), np.float32)  # after a relu, all-zero windows are common
    y, backprop = MaxPool2D(pool_size=2).forward({}, x, Context(True))
    dx, _ = backprop(np.ones_like(y))
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


def reference_maxpool2d_backward(x, dy, pool, stride):
    """Each output gradient goes to the first maximum of its window (row-major), as in PyTorch."""
    dx = np.zeros_like(x)
    for b, ch, i, j in np.ndindex(*dy.shape):
        window = x[b, ch, i * stride : i * stride + pool, j * stride : j * stride + pool]
        a, c = divmod(int(window.argmax()), pool)
        dx[b, ch, i * stride + a, j * stride + c] += dy[b, ch, i, j]
    return dx


@pytest.mark.parametrize("c,h,w,pool,stride", POOL_CASES)
def test_maxpool2d_backward_matches_reference_with_many_ties(c, h, w, pool, stride):
    """Small integers make ties frequent (finite differences cannot check those: max has a kink there)."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, (3, c, h, w)).astype(np.float32)
    for train in (True, False):  # backprop also works after an inference-mode forward
        y, backprop = MaxPool2D(pool_size=pool, stride=stride).forward({}, x, Context(train))
        dy = rng.normal(size=y.shape).astype(np.float32)
        dx, _ = backprop(dy)
        np.testing.assert_allclose(dx, reference_maxpool2d_backward(x, dy, pool, stride or pool), rtol=1e-6, atol=1e-6)


def test_relu_forward_and_gradients():
    x = _input((4, 3, 5, 5))
    y, backprop = ReLU().forward({}, x, Context(True))
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    dx, _ = backprop(np.ones_like(y))
    np.testing.assert_array_equal(dx, (x > 0).astype(np.float32))
    check_gradients(ReLU(), (2, 3, 3))


def test_flatten_forward_and_gradients():
    x = _input((2, 3, 4, 5))
    y, _ = Flatten().forward({}, x, Context(False))
    np.testing.assert_array_equal(y, np.array([sample.ravel() for sample in x]))
    check_gradients(Flatten(), (3, 2, 2))


@pytest.mark.parametrize("features,units,use_bias", [(5, 3, True), (1, 4, True), (6, 1, False)])
def test_dense_forward_matches_reference_and_gradients(features, units, use_bias):
    layer = Dense(units=units, use_bias=use_bias)
    weights = _weights(layer, (features,))
    x = _input((4, features))
    y, _ = layer.forward(weights, x, Context(False))
    np.testing.assert_allclose(y, reference_dense(x, weights["kernel"], weights.get("bias")), rtol=1e-5, atol=1e-6)
    check_gradients(layer, (features,))


def test_softmax_forward_matches_reference_and_gradients():
    x = _input((4, 6)) * 10
    y, _ = Softmax().forward({}, x, Context(False))
    np.testing.assert_allclose(y, reference_softmax(x), rtol=1e-5, atol=1e-7)
    check_gradients(Softmax(), (5,))


def test_softmax_does_not_overflow_on_large_logits():
    y, _ = Softmax().forward({}, np.array([[1000.0, 0.0, -1000.0]], np.float32), Context(False))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])


def test_model_backprop_skips_only_work_whose_result_is_unused():
    """The model stops at its first weighted layer; the weight gradients equal a full layer-by-layer chain."""
    spec = {
        "input": {"shape": [1, 8, 8]},
        "layers": [
            {"type": "relu"},
            {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "same"},
            {"type": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 3},
            {"type": "softmax"},
        ],
    }
    model = cnnkit.build(spec)
    x = _input((5, 1, 8, 8))
    logits, backprop = model.forward(x, train=True, logits=True)
    dlogits = _input(logits.shape, seed=3)
    grads = backprop(dlogits)
    backprops, h = [], x
    for r in model.layers[:-1]:
        weights = {name: model.weights[f"{r.index}.{name}"] for name in r.layer.weights(r.input_shape)}
        h, bp = r.layer.forward(weights, h, Context(True))
        backprops.append((r.index, bp))
    expected, dy = {}, dlogits
    for index, bp in reversed(backprops):
        dy, layer_grads = bp(dy)
        expected.update({f"{index}.{name}": g for name, g in layer_grads.items()})
    np.testing.assert_array_equal(logits, h)
    assert set(grads) == set(expected) == set(model.weights)
    for name in grads:
        assert grads[name].dtype == np.float32, name
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-5, atol=1e-7)


def test_an_empty_batch_runs_forward_and_backward():
    model = cnnkit.build("specs/fashion_mnist_seed.json")
    logits, backprop = model.forward(np.zeros((0, 1, 28, 28), np.float32), train=True, logits=True)
    assert logits.shape == (0, 10)
    grads = backprop(np.zeros((0, 10), np.float32))
    assert set(grads) == set(model.weights) and not any(g.any() for g in grads.values())


def test_training_step_stays_float32():
    model = cnnkit.build("specs/fashion_mnist_seed.json")
    x = _input((3, 1, 28, 28))
    logits, backprop = model.forward(x, train=True, logits=True)
    loss, dlogits = softmax_cross_entropy(logits, np.array([0, 4, 9]))
    assert logits.dtype == dlogits.dtype == np.float32
    assert all(g.dtype == np.float32 for g in backprop(dlogits).values())


# -- PyTorch parity (float32) -------------------------------------------------------------------------

TORCH_RTOL, TORCH_ATOL = 1e-4, 1e-5  # float32 with different summation orders


@pytest.mark.torch
@pytest.mark.parametrize("c,h,w,filters,k,stride,padding,use_bias", CONV_CASES)
def test_conv2d_matches_pytorch(c, h, w, filters, k, stride, padding, use_bias):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layer = Conv2D(filters=filters, kernel_size=k, stride=stride, padding=padding, use_bias=use_bias)
    weights = _weights(layer, (c, h, w))
    x = _input((4, c, h, w))
    y, backprop = layer.forward(weights, x, Context(True))
    dy = _input(y.shape, seed=7)
    dx, grads = backprop(dy)

    xt = torch.tensor(x, requires_grad=True)
    kt = torch.tensor(weights["kernel"], requires_grad=True)
    bt = torch.tensor(weights["bias"], requires_grad=True) if use_bias else None
    ph, pw = reference_padding(padding, h, k, stride), reference_padding(padding, w, k, stride)
    yt = F.conv2d(F.pad(xt, (pw[0], pw[1], ph[0], ph[1])), kt, bt, stride=stride)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(grads["kernel"], kt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    if use_bias:
        np.testing.assert_allclose(grads["bias"], bt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.torch
@pytest.mark.parametrize("c,h,w,pool,stride", POOL_CASES)
def test_maxpool2d_matches_pytorch(c, h, w, pool, stride):
    torch = pytest.importorskip("torch")
    x = _input((4, c, h, w))
    y, backprop = MaxPool2D(pool_size=pool, stride=stride).forward({}, x, Context(True))
    dy = _input(y.shape, seed=7)
    dx, _ = backprop(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, pool, stride or pool)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.torch
def test_dense_matches_pytorch():
    torch = pytest.importorskip("torch")
    layer = Dense(units=7)
    weights = _weights(layer, (13,))
    x = _input((5, 13))
    y, backprop = layer.forward(weights, x, Context(True))
    dy = _input(y.shape, seed=7)
    dx, grads = backprop(dy)
    xt = torch.tensor(x, requires_grad=True)
    kt = torch.tensor(weights["kernel"].T.copy(), requires_grad=True)  # torch stores (out, in)
    bt = torch.tensor(weights["bias"], requires_grad=True)
    yt = torch.nn.functional.linear(xt, kt, bt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(grads["kernel"], kt.grad.numpy().T, rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(grads["bias"], bt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.torch
def test_softmax_cross_entropy_matches_pytorch():
    torch = pytest.importorskip("torch")
    logits = _input((6, 10)) * 30  # large logits: a naive exp would overflow
    labels = np.array([0, 3, 9, 9, 1, 5])
    loss, grad = softmax_cross_entropy(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
