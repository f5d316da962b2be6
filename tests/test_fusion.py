"""Fused steps (cnnkit/runtime/plan.py, cnnkit/layers/kernels/bn_relu_pool.py and fold.py) against
the layers they replace, PyTorch and float64 finite differences; and a whole model fused or not."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.layers.activations import ReLU
from cnnkit.layers.base import Context, Layer, Weight
from cnnkit.layers.batchnorm import BatchNorm2D
from cnnkit.layers.kernels import bn_relu_pool
from cnnkit.layers.pool import MaxPool2D
from cnnkit.testing import check_gradients

# (N, C, H, W, pool, stride): 2x2 windows, floor-mode crops (odd sizes), overlapping and gapped
# windows, batch 1, one channel, 1x1 images.
SHAPES = [(4, 3, 8, 8, 2, 2), (2, 2, 7, 5, 2, 2), (3, 2, 7, 7, 3, 2), (5, 4, 9, 6, 2, 3), (1, 3, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1)]


def layers_in_turn(x, weights, pool, stride, train, dy=None):
    """batchnorm2d -> relu -> maxpool2d run as three layers: y, the state reported, and (dx, grads)."""
    ctx = Context(train)
    a, bn_back = BatchNorm2D().forward(weights, x, ctx)
    r, relu_back = ReLU().forward({}, a, Context(train))
    y, pool_back = MaxPool2D(pool_size=pool, stride=stride).forward({}, r, Context(train))
    if dy is None:
        return y, ctx.updates, None
    return y, ctx.updates, bn_back(relu_back(pool_back(dy)[0])[0])


def batch(n, c, h, w, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    x[0, 0, : min(2, h), : min(2, w)] = 0.5  # a tied window
    weights = {"gamma": rng.normal(size=c).astype(np.float32), "beta": (0.3 * rng.normal(size=c)).astype(np.float32),
               "running_mean": rng.normal(size=c).astype(np.float32), "running_var": rng.uniform(0.5, 2, c).astype(np.float32)}
    return x, weights


@pytest.mark.parametrize("n, c, h, w, pool, stride", SHAPES)
def test_bn_relu_pool_gives_the_layers_values_bit_for_bit_and_their_gradients(n, c, h, w, pool, stride):
    x, weights = batch(n, c, h, w)
    dy = np.random.default_rng(1).normal(size=(n, c, (h - pool) // stride + 1, (w - pool) // stride + 1)).astype(np.float32)
    y_ref, updates_ref, (dx_ref, grads_ref) = layers_in_turn(x, weights, pool, stride, True, dy)
    y, backprop, (mean, var) = bn_relu_pool.train(x, weights["gamma"], weights["beta"], 1e-5, pool, stride)
    np.testing.assert_array_equal(y, y_ref)
    updates = bn_relu_pool.running_statistics(weights, mean, var, n * h * w, 0.1)
    for name in updates_ref:
        np.testing.assert_array_equal(updates[name], updates_ref[name])
    dx, grads = backprop(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
    for name in ("gamma", "beta"):  # summed over windows instead of positions: rounding only
        np.testing.assert_allclose(grads[name], grads_ref[name], rtol=1e-5, atol=1e-5)
    inferred = bn_relu_pool.infer(x, weights["running_mean"], weights["running_var"], weights["gamma"], weights["beta"], 1e-5, pool, stride)
    np.testing.assert_array_equal(inferred, layers_in_turn(x, weights, pool, stride, False)[0])


@pytest.mark.parametrize("n, c, h, w, pool, stride", SHAPES)
def test_relu_pool_gives_the_layers_values_and_gradient_bit_for_bit(n, c, h, w, pool, stride):
    x, _ = batch(n, c, h, w)
    x[..., ::2, :] = np.maximum(x[..., ::2, :], 0) * 0  # windows of zeros and negatives: ties at the relu's zero
    r, relu_back = ReLU().forward({}, x, Context(True))
    y_ref, pool_back = MaxPool2D(pool_size=pool, stride=stride).forward({}, r, Context(True))
    dy = np.random.default_rng(1).normal(size=y_ref.shape).astype(np.float32)
    y, backprop = bn_relu_pool.relu_pool(x, pool, stride, train=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(backprop(dy), relu_back(pool_back(dy)[0])[0])
    np.testing.assert_array_equal(bn_relu_pool.relu_pool(x, pool, stride, train=False)[0], y_ref)


class BatchNormReluPool(Layer):
    """The fused kernel as a layer, so the conformance kit's finite differences can check it."""

    batch_coupling = "per_part"

    def __init__(self, pool, stride):
        super().__init__()
        self.pool, self.stride = pool, stride

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c, (h - self.pool) // self.stride + 1, (w - self.pool) // self.stride + 1)

    def weights(self, input_shape):
        return {"gamma": Weight((input_shape[0],), 1.0), "beta": Weight((input_shape[0],), 0.0)}

    def forward(self, weights, x, ctx):
        y, backprop, _ = bn_relu_pool.train(x, weights["gamma"], weights["beta"], 1e-5, self.pool, self.stride)
        return y, backprop


@pytest.mark.parametrize("input_shape, pool, stride", [((3, 6, 6), 2, 2), ((2, 5, 7), 3, 2), ((1, 1, 1), 1, 1)])
def test_bn_relu_pool_gradients_match_finite_differences(input_shape, pool, stride):
    errors = check_gradients(BatchNormReluPool(pool, stride), input_shape, batch=3)
    assert set(errors) == {"input", "gamma", "beta"}


@pytest.mark.torch
@pytest.mark.parametrize("n, c, h, w, pool, stride", SHAPES[:4])
def test_bn_relu_pool_matches_pytorch(n, c, h, w, pool, stride):
    torch = pytest.importorskip("torch")
    x, weights = batch(n, c, h, w)
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(c), torch.nn.ReLU(), torch.nn.MaxPool2d(pool, stride)).train()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(weights["gamma"]))
        net[0].bias.copy_(torch.from_numpy(weights["beta"]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = net(xt)
    dy = np.random.default_rng(1).normal(size=tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(dy))
    y, backprop, _ = bn_relu_pool.train(x, weights["gamma"], weights["beta"], 1e-5, pool, stride)
    dx, grads = backprop(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["gamma"], net[0].weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["beta"], net[0].bias.grad.numpy(), rtol=1e-4, atol=1e-5)


# The best spec's shape of net, small: conv -> batch norm -> relu -> pool twice, the second conv
# wide enough for Winograd.
BN_SPEC = {
    "name": "fused",
    "input": {"shape": [1, 12, 10]},
    "layers": [
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same"},
        {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"},
    ],
}


def test_the_model_runs_the_best_specs_layers_as_fused_steps():
    model = cnnkit.build(BN_SPEC)
    assert [(s.kind, s.indices) for s in model.steps(train=True)][:4] == [("layer", (0,)), ("bn_relu_pool", (1, 2, 3)), ("layer", (4,)), ("bn_relu_pool", (5, 6, 7))]
    # Inference: the first convolution (one input channel) folds its batch norm and pools as a step
    # of its own; the second (16 -> 16 channels, Winograd) pools inside its kernel.
    assert [(s.kind, s.indices) for s in model.steps(train=False)][:3] == [("conv_bn", (0, 1)), ("relu_pool", (2, 3)), ("conv_bn_relu_pool", (4, 5, 6, 7))]


def test_inference_pools_inside_the_winograd_kernel_only_where_its_tiles_are_the_windows():
    def kinds(layers, shape=(16, 9, 8)):
        spec = {"input": {"shape": list(shape)}, "layers": [*layers, {"type": "flatten"}, {"type": "dense", "units": 3}]}
        return [s.kind for s in cnnkit.build(spec).steps(train=False)][:-2]

    conv = {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same"}
    relu, pool = {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2}
    assert kinds([conv, relu, pool]) == ["conv_relu_pool"]
    assert kinds([conv, {"type": "batchnorm2d"}, relu, pool]) == ["conv_bn_relu_pool"]
    assert kinds([conv, relu, {**pool, "stride": 1}]) == ["layer", "relu_pool"]  # windows overlap tiles
    assert kinds([conv, relu, {**pool, "pool_size": 3}]) == ["layer", "relu_pool"]
    assert kinds([{**conv, "stride": 2}, relu, pool]) == ["layer", "relu_pool"]
    assert kinds([{**conv, "kernel_size": 5}, relu, pool]) == ["layer", "relu_pool"]
    assert kinds([conv, relu, pool], shape=(3, 9, 8)) == ["layer", "relu_pool"]  # too few channels for Winograd


# (N, C, H, W, F, padding, bias). F(2x2, 3x3) (tile_size 2) first: whole tiles, odd sizes whose last
# window row and column are dropped, batch 1, non-square, no padding, padding wider than the kernel,
# several groups of images (12 a group at 8x8) with a partial last one.
POOLED_CASES = [
    (5, 16, 14, 14, 16, "same", True),
    (9, 16, 7, 9, 17, "same", False),
    (1, 17, 6, 5, 16, "valid", True),
    (2, 16, 4, 4, 16, 2, True),
    (33, 16, 8, 8, 16, "same", True),
    # F(4x4, 3x3) (tile_size 4): the best net's third block (odd: half a tile wasted at each edge);
    # non-square, three groups of 9 images, the last partial; no padding.
    (3, 64, 7, 7, 128, "same", True),
    (20, 48, 9, 11, 64, "same", False),
    (9, 64, 6, 6, 128, "valid", True),
]


def test_each_layer_takes_the_winograd_tile_with_fewer_multiply_adds():
    from cnnkit.layers.kernels.winograd_pool import tile_size

    assert tile_size(32, 64, 14, 14) == 2  # the best net's second block: F(4x4) would waste a third of its tiles
    assert tile_size(64, 128, 7, 7) == 4  # its third block
    from cnnkit.layers.conv import Conv2D

    outputs = [(c, Conv2D(filters=f, kernel_size=3, padding=p).output_shape((c, h, w))) for _, c, h, w, f, p, _ in POOLED_CASES]
    sizes = {tile_size(c, f, out_h, out_w) for c, (f, out_h, out_w) in outputs}
    assert sizes == {2, 4}  # the cases below run both


@pytest.mark.parametrize("n, c, h, w, f, padding, bias", POOLED_CASES)
def test_the_pooled_winograd_kernel_matches_the_reference_in_float64(n, c, h, w, f, padding, bias):
    from cnnkit.layers.conv import Conv2D

    from test_layers import _input, _weights, reference_conv2d

    conv = Conv2D(filters=f, kernel_size=3, padding=padding, use_bias=bias)
    weights = {k: v.astype(np.float64) for k, v in _weights(conv, (c, h, w)).items()}
    x = _input((n, c, h, w), dtype=np.float64)
    assert conv.fuses_relu_pool((c, h, w))
    expected = layers_in_turn_plain(reference_conv2d(x, weights["kernel"], weights.get("bias"), 1, padding))
    y = conv.forward_relu_pool(weights, x)
    assert y.dtype == np.float64 and y.flags.c_contiguous
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, c, h, w, f, padding, bias", POOLED_CASES)
def test_the_pooled_winograd_kernel_is_the_layers_bit_for_bit_with_f2_and_to_rounding_with_f4(n, c, h, w, f, padding, bias):
    from cnnkit.layers.conv import Conv2D
    from cnnkit.layers.kernels.winograd_pool import tile_size

    from test_layers import _input, _weights

    conv = Conv2D(filters=f, kernel_size=3, padding=padding, use_bias=bias)
    weights, x = _weights(conv, (c, h, w)), _input((n, c, h, w))
    x[0, :, :2, :2] = 0  # windows of equal outputs (the bias alone, if any)
    expected = layers_in_turn_plain(conv.forward(weights, x, Context(False))[0])
    y = conv.forward_relu_pool(weights, x)
    assert y.shape == expected.shape and y.dtype == np.float32
    _, out_h, out_w = conv.output_shape((c, h, w))
    if tile_size(c, f, out_h, out_w) == 2:  # the layers' own Winograd transform: pooling first changes no bit
        np.testing.assert_array_equal(y, expected)
    else:  # F(4x4, 3x3) rounds differently
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.torch
def test_the_pooled_winograd_kernel_matches_pytorch_in_float32():
    torch = pytest.importorskip("torch")
    from cnnkit.layers.conv import Conv2D

    from test_layers import _input, _weights

    conv = Conv2D(filters=32, kernel_size=3, padding="same")
    weights, x = _weights(conv, (64, 13, 10)), _input((6, 64, 13, 10))
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(weights["kernel"]))
        net[0].bias.copy_(torch.from_numpy(weights["bias"]))
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(conv.forward_relu_pool(weights, x), expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("n, c, h, f", [(37, 16, 8, 16), (20, 48, 9, 64)])  # F(2x2): groups of 12 (12, 12, 12, 1); F(4x4): of 9 (9, 9, 2)
def test_the_pooled_winograd_kernel_gives_the_same_bits_for_any_thread_split(monkeypatch, n, c, h, f):
    from cnnkit.layers import conv_blocks
    from cnnkit.layers.conv import Conv2D
    from cnnkit.runtime import parallel

    from test_layers import _input, _weights

    monkeypatch.setattr(parallel, "spare_cores", lambda: True)
    monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", 1)
    calls: list[int] = []
    real = parallel.run_all
    monkeypatch.setattr(parallel, "run_all", lambda tasks: calls.append(len(tasks)) or real(tasks))
    conv = Conv2D(filters=f, kernel_size=3, padding="same")
    weights, x = _weights(conv, (c, h, h)), _input((n, c, h, h))
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    reference = conv.forward_relu_pool(weights, x)
    for threads in (2, 3):
        monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
        np.testing.assert_array_equal(conv.forward_relu_pool(weights, x), reference)
    assert calls == [2, 3]  # the groups really were split


def layers_in_turn_plain(y_conv):
    r = ReLU().forward({}, y_conv, Context(False))[0]
    return MaxPool2D(pool_size=2).forward({}, r, Context(False))[0]


def test_fused_and_plain_models_train_alike_and_predict_within_folding_rounding(monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")  # one part of 40: the fused training step runs from 32 samples on
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(40, 1, 12, 10)).astype(np.float32), rng.normal(size=(40, 10)).astype(np.float32)
    results = {}
    for fuse in ("0", "1"):
        monkeypatch.setenv("CNNKIT_FUSE", fuse)
        model = cnnkit.build(BN_SPEC)
        for name in model.weights:  # trained-looking running statistics, so folding has work to do
            if name.endswith("running_mean") or name.endswith("running_var"):
                model.weights[name][...] = rng.uniform(0.5, 1.5, model.weights[name].shape)
        y, backprop = model.forward(x, train=True, logits=True)
        results[fuse] = (y, backprop(dy), model.forward(x)[0], {k: v.copy() for k, v in model.weights.items()})
        rng = np.random.default_rng(0)  # the same statistics for both
        rng.normal(size=(40, 1, 12, 10)), rng.normal(size=(40, 10))
    (y0, g0, p0, w0), (y1, g1, p1, w1) = results["0"], results["1"]
    np.testing.assert_array_equal(y1, y0)  # training forward: bit for bit
    for name in w0:  # running statistics reported by the fused step: bit for bit
        np.testing.assert_array_equal(w1[name], w0[name], err_msg=name)
    largest = max(float(np.abs(g).max()) for g in g0.values())  # a bias before batch norm gets ~0: rounding noise
    for name, g in g0.items():
        np.testing.assert_allclose(g1[name], g, rtol=1e-4, atol=1e-5 * largest, err_msg=name)
    np.testing.assert_allclose(p1, p0, rtol=1e-5, atol=1e-6)  # batch norm folded into the convolutions


@pytest.mark.filterwarnings("ignore:the final test accuracy")
def test_the_seed_nets_bundle_is_byte_identical_fused_or_not(monkeypatch, tmp_path, synthetic_dir):
    """relu -> maxpool2d fused computes the layers' numbers exactly, so the seed net trains to the
    same bytes (its 5x5 convolutions keep their path)."""
    spec = cnnkit.spec.load_spec("specs/fashion_mnist_seed.json").to_dict()
    spec["data"] = {"dataset": "fashion-mnist", "dir": str(synthetic_dir), "train_limit": 120, "test_limit": 20}
    spec["train"]["epochs"] = 1
    paths = []
    for fuse in ("0", "1"):
        monkeypatch.setenv("CNNKIT_FUSE", fuse)
        paths.append(cnnkit.train(spec).save(tmp_path / f"fuse{fuse}.cnnkit"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.onnx
def test_the_onnx_export_folds_batch_norm_as_predict_proba_does(monkeypatch):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from cnnkit.export.onnx import to_onnx
    from cnnkit.layers.kernels.fold import fold_batchnorm

    model = cnnkit.build(BN_SPEC)
    rng = np.random.default_rng(0)
    for name in model.weights:
        if "running" in name or "gamma" in name or "beta" in name:
            model.weights[name][...] = rng.uniform(0.5, 1.5, model.weights[name].shape)
    proto = to_onnx(model, "float32")
    assert "BatchNormalization" not in [node.op_type for node in proto.graph.node]
    stored = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    w = {k.split(".", 1)[1]: v for k, v in model.weights.items() if k.startswith("1.")}
    kernel, bias = fold_batchnorm(model.weights["0.kernel"], None, w, 1e-5)
    np.testing.assert_array_equal(stored["0.kernel"], kernel)
    np.testing.assert_array_equal(stored["0.bias"], bias)
    pixels = rng.integers(0, 256, (6, 1, 12, 10)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(["probabilities"], {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), rtol=0, atol=1e-6)
    monkeypatch.setenv("CNNKIT_FUSE", "0")  # the plain path exports the layers as they are
    assert "BatchNormalization" in [node.op_type for node in to_onnx(model, "float32").graph.node]


@pytest.mark.parametrize("n, fused_calls", [(31, []), (32, [32, 32])])
def test_a_training_part_under_32_samples_runs_batch_norm_relu_and_pool_as_themselves(monkeypatch, n, fused_calls):
    """The fused training step runs from SMALL_BATCH samples a part on; below, the layers run as
    themselves, so the numbers are the plain path's bit for bit."""
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    calls: list[int] = []
    real = bn_relu_pool.train
    monkeypatch.setattr(bn_relu_pool, "train", lambda x, *a: calls.append(len(x)) or real(x, *a))
    x = np.random.default_rng(0).normal(size=(n, 1, 12, 10)).astype(np.float32)
    results = {}
    for fuse in ("0", "1"):
        monkeypatch.setenv("CNNKIT_FUSE", fuse)
        y, backprop = cnnkit.build(BN_SPEC).forward(x, train=True, logits=True)
        results[fuse] = (y, backprop(np.ones_like(y)))
    assert calls == fused_calls
    if not fused_calls:
        (y0, g0), (y1, g1) = results["0"], results["1"]
        np.testing.assert_array_equal(y1, y0)
        for name in g0:
            np.testing.assert_array_equal(g1[name], g0[name], err_msg=name)


def test_derived_weights_are_reused_only_while_their_sources_are_unchanged():
    from cnnkit.layers.kernels.derived import Derived

    calls = []
    cache = Derived(size=2)
    kernel = np.ones((2, 3), np.float32)

    def doubled(a):
        calls.append(1)
        return a * 2

    first = cache.get(doubled, kernel)
    assert cache.get(doubled, kernel) is first and len(calls) == 1
    kernel[0, 0] = 5  # changed in place, as an optimizer step does
    np.testing.assert_array_equal(cache.get(doubled, kernel), kernel * 2)
    assert len(calls) == 2
    assert cache.get(doubled, kernel.copy()) is not first and len(calls) == 3  # another array, same values
    for _ in range(3):  # the oldest entries go
        cache.get(doubled, np.zeros(1))
    cache.get(doubled, kernel)
    assert len(calls) == 7


def test_inference_with_cached_weights_follows_a_weight_change(monkeypatch):
    model = cnnkit.build(BN_SPEC)
    x = np.random.default_rng(0).normal(size=(3, 1, 12, 10)).astype(np.float32)
    before = model.forward(x)[0]
    np.testing.assert_array_equal(model.forward(x)[0], before)  # served from the caches: the same bits
    model.weights["1.gamma"] *= 2  # in place
    model.weights["4.kernel"] += 0.1
    after = model.forward(x)[0]
    monkeypatch.setenv("CNNKIT_FUSE", "0")
    np.testing.assert_allclose(after, model.forward(x)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after, before)


def test_a_net_without_batch_norm_predicts_the_same_bits_fused_or_not(monkeypatch):
    spec = {"input": {"shape": [16, 10, 9]}, "layers": [
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same"}, {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 4}, {"type": "softmax"}]}
    x = np.random.default_rng(3).normal(size=(11, 16, 10, 9)).astype(np.float32)
    outputs = {}
    for fuse in ("0", "1"):
        monkeypatch.setenv("CNNKIT_FUSE", fuse)
        model = cnnkit.build(spec)
        outputs[fuse] = (model.forward(x)[0], [s.kind for s in model.steps(train=False)])
    assert outputs["1"][1][0] == "conv_relu_pool" and outputs["0"][1][0] == "layer"
    np.testing.assert_array_equal(outputs["1"][0], outputs["0"][0])  # F(2x2, 3x3) here: the layers' bits


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_a_subclass_anywhere_in_conv_bn_relu_pool_keeps_the_pooled_step_from_fusing(position):
    import dataclasses

    from cnnkit.layers.conv import Conv2D
    from cnnkit.runtime import plan

    subclass = type("Mine", ((Conv2D, BatchNorm2D, ReLU, MaxPool2D)[position],), {})
    model = cnnkit.build({"input": {"shape": [16, 8, 8]}, "layers": [
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same"}, {"type": "batchnorm2d"},
        {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"}, {"type": "dense", "units": 3}]})
    layers = list(model.layers)
    layers[position] = dataclasses.replace(layers[position], layer=subclass(layers[position].layer.params))
    kinds = [s.kind for s in plan.plan(layers, train=False)]
    assert "conv_bn_relu_pool" not in kinds and "conv_relu_pool" not in kinds
    assert kinds[0] == ("conv_bn" if position >= 2 else "layer")
