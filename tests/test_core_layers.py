"""The core layers added with random layers and batch norm on all cores (issue 9): dropout,
avgpool2d, global_avg_pool2d, tanh, sigmoid — one table against PyTorch (forward and backward, train
and inference mode) and float64 finite differences, plus what dropout's randomness must do.
batchnorm2d has its own file (tests/test_batchnorm.py)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.data import Dataset, load_fashion_mnist
from cnnkit.layers.avgpool import AvgPool2D
from cnnkit.layers.dropout import Dropout
from cnnkit.layers.global_avg_pool import GlobalAvgPool2D
from cnnkit.layers.sigmoid import Sigmoid
from cnnkit.layers.tanh import Tanh
from cnnkit.runtime.model import MIN_PART, Model
from cnnkit.testing import check_gradients
from cnnkit.layers import Context
from conftest import REAL_DATA, synthetic_images

TORCH_RTOL, TORCH_ATOL = 1e-5, 1e-6  # float32, as in tests/test_layers.py but these sum little


def reference_avgpool2d(x, k, s, p, count_include_pad):
    """Naive loops: zero-pad, then the mean over each window (padded zeros counted or not)."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * p, w + 2 * p), np.float64)
    padded[:, :, p : p + h, p : p + w] = x
    real = np.zeros_like(padded)
    real[:, :, p : p + h, p : p + w] = 1
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y = np.zeros((n, c, out_h, out_w))
    for b, ch, i, j in np.ndindex(*y.shape):
        window = np.s_[b, ch, i * s : i * s + k, j * s : j * s + k]
        y[b, ch, i, j] = padded[window].sum() / (k * k if count_include_pad else real[window].sum())
    return y


# (id, layer, input shape, torch function of (F, x) or None when the numpy reference says it all)
AVGPOOL_CASES = [
    # (pool_size, stride, padding, count_include_pad, input shape)
    (2, None, 0, True, (2, 6, 6)),
    (2, None, 0, True, (2, 7, 5)),  # odd sizes: floor mode drops the last row/column
    (3, 2, 1, True, (2, 7, 7)),  # overlapping windows, padding counted (PyTorch's default)
    (3, 2, 1, False, (2, 7, 7)),  # ... and not counted
    (3, 1, 1, False, (1, 5, 6)),
    (2, 3, 0, True, (2, 9, 9)),  # gaps between windows
    (4, 2, 2, False, (1, 6, 5)),
]
CASES = [
    ("tanh", Tanh(), (3, 5, 5), lambda F, x: x.tanh()),
    ("tanh-flat", Tanh(), (7,), lambda F, x: x.tanh()),
    ("sigmoid", Sigmoid(), (3, 5, 5), lambda F, x: x.sigmoid()),
    ("global_avg_pool2d", GlobalAvgPool2D(), (3, 5, 4), lambda F, x: F.adaptive_avg_pool2d(x, 1).flatten(1)),
    ("dropout-rate-0", Dropout(rate=0.0), (3, 4, 4), lambda F, x: F.dropout(x, 0.0, training=True)),
    *(
        (f"avgpool2d-{k}-{s}-{p}-{cip}-{'x'.join(map(str, shape))}", AvgPool2D(pool_size=k, stride=s, padding=p, count_include_pad=cip), shape,
         lambda F, x, k=k, s=s, p=p, cip=cip: F.avg_pool2d(x, k, s or k, p, count_include_pad=cip))
        for k, s, p, cip, shape in AVGPOOL_CASES
    ),
]
IDS = [case[0] for case in CASES]


def _input(shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@pytest.mark.torch
@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("name, layer, shape, torch_fn", CASES, ids=IDS)
def test_matches_pytorch_forward_and_backward(name, layer, shape, torch_fn, train):
    torch = pytest.importorskip("torch")
    x = _input((4, *shape)) * 3
    y, backprop = layer.forward({}, x, Context(train, rng=np.random.default_rng(0)))
    dy = _input(y.shape, seed=7)
    dx, grads = backprop(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(torch.nn.functional, xt)
    yt.backward(torch.tensor(dy))
    assert y.dtype == dx.dtype == np.float32 and grads == {}
    assert y.shape == (4, *layer.output_shape(shape))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("name, layer, shape, torch_fn", [*CASES, ("dropout", Dropout(rate=0.4), (3, 4, 4), None)], ids=[*IDS, "dropout"])
def test_gradients_match_finite_differences(name, layer, shape, torch_fn, train):
    assert set(check_gradients(layer, shape, batch=3, train=train)) == {"input"}


@pytest.mark.parametrize("k, s, p, count_include_pad, shape", AVGPOOL_CASES)
def test_avgpool2d_matches_reference(k, s, p, count_include_pad, shape):
    layer = AvgPool2D(pool_size=k, stride=s, padding=p, count_include_pad=count_include_pad)
    x = _input((3, *shape), dtype=np.float64)
    y, _ = layer.forward({}, x, Context(False))
    np.testing.assert_allclose(y, reference_avgpool2d(x, k, s or k, p, count_include_pad), rtol=1e-12, atol=1e-12)
    assert y.dtype == np.float64


def test_sigmoid_and_tanh_saturate_without_overflow():
    x = np.array([[-1000.0, -20.0, 0.0, 20.0, 1000.0]], np.float32)
    with np.errstate(all="raise"):
        y, backprop = Sigmoid().forward({}, x, Context(True))
        dx, _ = backprop(np.ones_like(x))
        t, _ = Tanh().forward({}, x, Context(False))
    np.testing.assert_allclose(y, [[0.0, 2.0611537e-09, 0.5, 1.0, 1.0]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dx, y * (1 - y))
    np.testing.assert_array_equal(t, np.tanh(x))


# -- dropout --------------------------------------------------------------------------------------------


def test_dropout_is_the_identity_in_inference_like_torch_eval():
    x = _input((4, 3, 5, 5))
    y, backprop = Dropout(rate=0.5).forward({}, x, Context(False))
    assert y is x
    dy = _input(x.shape, seed=2)
    assert backprop(dy)[0] is dy


@pytest.mark.torch
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_in_training_scales_like_torch(rate):
    """Torch draws its own masks, so compare what does not depend on the draw: survivors are
    x / (1 - rate) exactly as torch computes them, the gradient flows through survivors with the
    same factor, and both keep about 1 - rate of the elements."""
    torch = pytest.importorskip("torch")
    x = np.abs(_input((8, 4, 25, 25))) + np.float32(0.1)  # nonzero, so a zero output means dropped
    y, backprop = Dropout(rate=rate).forward({}, x, Context(True, rng=np.random.default_rng(0)))
    dy = _input(x.shape, seed=3)
    dx, _ = backprop(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.dropout(xt, rate, training=True)
    yt.backward(torch.tensor(dy))
    torch_y, torch_dx = yt.detach().numpy(), xt.grad.numpy()
    for out, grad in ((y, dx), (torch_y, torch_dx)):
        kept = out != 0
        np.testing.assert_allclose(out[kept], x[kept] * np.float32(1 / (1 - rate)), rtol=1e-6)
        np.testing.assert_allclose(grad, np.where(kept, dy * np.float32(1 / (1 - rate)), 0), rtol=1e-6)
        # 20,000 elements: the kept fraction's standard deviation is below 0.0036
        assert abs(kept.mean() - (1 - rate)) < 0.02
    assert y.dtype == dx.dtype == np.float32


def test_dropout_without_a_generator_in_training_is_an_error():
    with pytest.raises(ValueError, match="dropout needs a random generator in training"):
        Dropout(rate=0.5).forward({}, _input((2, 3)), Context(True))


@pytest.mark.parametrize("rate, message", [(-0.1, "greater than or equal to 0"), (1.0, "less than 1"), (True, "")])
def test_a_bad_dropout_rate_is_a_spec_error_at_its_json_path(rate, message):
    spec = {"input": {"shape": [4]}, "layers": [{"type": "dense", "units": 3}, {"type": "dropout", "rate": rate}]}
    with pytest.raises(cnnkit.SpecError, match=rf"layers\[1\]\.rate: .*{message}"):
        cnnkit.validate_spec(spec)


def test_avgpool2d_padding_over_half_the_window_is_a_spec_error():
    spec = {"input": {"shape": [1, 8, 8]}, "layers": [{"type": "avgpool2d", "pool_size": 2, "padding": 2}]}
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\].*padding must be at most half of pool_size \(1\)"):
        cnnkit.validate_spec(spec)


DROPOUT_SPEC = {
    "name": "dropout",
    "input": {"shape": [1, 6, 6]},
    "layers": [{"type": "flatten"}, {"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 3}, {"type": "dropout", "rate": 0.5}],
    "train": {"seed": 7},
}


def _masks(model, key, n=4):
    y, _ = model.forward(np.ones((n, 1, 6, 6), np.float32), train=True, key=key)
    return y


def test_dropout_masks_differ_across_steps_and_repeat_for_the_same_seed(monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    model = cnnkit.build(DROPOUT_SPEC)
    first = _masks(model, (1, 0))
    np.testing.assert_array_equal(first, _masks(model, (1, 0)))  # same seed, epoch, step: same masks
    np.testing.assert_array_equal(first, _masks(cnnkit.build(DROPOUT_SPEC), (1, 0)))  # ... in a fresh model too
    others = [_masks(model, key) for key in ((1, 1), (2, 0), (0, 0))]
    reseeded = Model({**DROPOUT_SPEC, "train": {"seed": 8}}, weights={k: v.copy() for k, v in model.weights.items()})
    others.append(_masks(reseeded, (1, 0)))
    for other in others:
        assert not np.array_equal(first, other)
    # Each layer draws from its own stream: the first dropout's mask is not the second's.
    h, _ = model.layers[1].layer.forward({}, np.ones((4, 36), np.float32), Context(True, rng=np.random.default_rng([7, 1, 0, 1, 0])))
    assert 0.3 < (h == 0).mean() < 0.7
    # Without a key, training uses the fixed key (0, 0); inference passes no generator at all.
    np.testing.assert_array_equal(model.forward(np.ones((4, 1, 6, 6), np.float32), train=True)[0], _masks(model, (0, 0)))
    x = np.ones((4, 1, 6, 6), np.float32)
    np.testing.assert_array_equal(model.forward(x, train=False)[0], model.forward(x, train=False, key=(3, 3))[0])


def test_dropout_in_a_split_batch_draws_per_part(monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    model = cnnkit.build(DROPOUT_SPEC)
    y = _masks(model, (1, 0), n=2 * MIN_PART)
    np.testing.assert_array_equal(y, _masks(model, (1, 0), n=2 * MIN_PART))
    # Each part has its own generator: the two halves' masks are not the same draw.
    assert not np.array_equal(y[:MIN_PART], y[MIN_PART:])


@pytest.mark.parametrize("key", [(1,), (1, -1), (1.0, 2), "1,2", (True, 0)])
def test_a_bad_key_is_a_one_line_error(key):
    model = cnnkit.build(DROPOUT_SPEC)
    with pytest.raises(cnnkit.CnnkitError, match=r"^key must be a tuple \(epoch, step\) of two non-negative integers. Received: "):
        model.forward(np.ones((2, 1, 6, 6), np.float32), train=True, key=key)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_dropout_model_trains_on_real_fashion_mnist_and_beats_chance():
    spec = {
        "name": "dropout-real",
        "input": {"shape": [1, 28, 28]},
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same"},
            {"type": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dropout", "rate": 0.3},
            {"type": "dense", "units": 10},
            {"type": "softmax"},
        ],
        "data": {"dir": str(REAL_DATA), "train_limit": 2000, "test_limit": 1000},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": {"type": "adam", "lr": 0.003}, "seed": 0},
    }
    data = load_fashion_mnist(REAL_DATA, 2000, 1000, verify=True)
    model = cnnkit.train(spec, data)
    metrics = model.metadata["metrics"]
    assert metrics["test_accuracy"] > 0.6, metrics  # chance is 0.1
    assert metrics["test_macro_f1"] > 0.5, metrics


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_every_new_layer_in_one_model_trains_splits_and_round_trips(monkeypatch, tmp_path):
    spec = {
        "name": "all-new-layers",
        "input": {"shape": [1, 28, 28]},
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "use_bias": False},
            {"type": "batchnorm2d"},
            {"type": "tanh"},
            {"type": "avgpool2d", "pool_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same"},
            {"type": "sigmoid"},
            {"type": "global_avg_pool2d"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10},
            {"type": "softmax"},
        ],
        "train": {"epochs": 3, "batch_size": 2 * MIN_PART, "optimizer": {"type": "adam", "lr": 0.03}, "seed": 0},
    }
    images, labels = synthetic_images(256, 1)
    data = Dataset(images, labels.astype(np.int64), images[:64], labels[:64].astype(np.int64), [str(i) for i in range(10)], "synthetic")
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    parts = []
    real_part = Model._forward_part
    monkeypatch.setattr(Model, "_forward_part", lambda self, x, train, *rest: parts.append((train, rest[-1])) or real_part(self, x, train, *rest))
    model = cnnkit.train(spec, data)
    assert (True, 1) in parts  # a training batch ran as two parts
    history = model.metadata["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    split = model.predict_proba(images[:64])
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    np.testing.assert_allclose(model.predict_proba(images[:64]), split, rtol=1e-5, atol=1e-6)  # inference: per-sample
    loaded = cnnkit.load(cnnkit.save(model, tmp_path / "all.cnnkit"))
    np.testing.assert_array_equal(loaded.predict_proba(images[:64]), model.predict_proba(images[:64]))
