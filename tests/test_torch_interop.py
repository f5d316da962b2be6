"""cnnkit.torch: to_module's forward equals cnnkit's, one SGD step in torch equals one in cnnkit, and
from_module brings the weights back — for every built-in layer (conv2d in each padding/stride/bias form)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.runtime.losses import softmax_cross_entropy
from cnnkit.optim import SGD

from conftest import TINY_SPEC

torch = pytest.importorskip("torch")

from cnnkit.torch import from_module, to_module  # noqa: E402

pytestmark = pytest.mark.torch

CONVS = {
    "valid": {"type": "conv2d", "filters": 4, "kernel_size": 3},
    "same-uneven-nobias": {"type": "conv2d", "filters": 4, "kernel_size": 4, "padding": "same", "use_bias": False},
    "same-stride2": {"type": "conv2d", "filters": 4, "kernel_size": 4, "stride": 2, "padding": "same"},
    "int-pad-stride3": {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 3, "padding": 2},
}
HEAD = [{"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "softmax"}]
CASES = {
    **{f"conv2d-{k}": [c, *HEAD] for k, c in CONVS.items()},
    "relu": [CONVS["valid"], {"type": "relu"}, *HEAD],
    "maxpool2d": [CONVS["valid"], {"type": "maxpool2d", "pool_size": 2}, *HEAD],
    "maxpool2d-overlapping": [CONVS["valid"], {"type": "maxpool2d", "pool_size": 3, "stride": 1}, *HEAD],
    "batchnorm2d": [CONVS["valid"], {"type": "batchnorm2d", "momentum": 0.3, "eps": 1e-3}, *HEAD],
    "dropout": [CONVS["valid"], {"type": "dropout", "rate": 0.0}, *HEAD],  # rate 0: torch draws its own masks
    "avgpool2d": [CONVS["valid"], {"type": "avgpool2d"}, *HEAD],
    "avgpool2d-padded": [CONVS["valid"], {"type": "avgpool2d", "pool_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, *HEAD],
    "global_avg_pool2d": [CONVS["valid"], {"type": "global_avg_pool2d"}, {"type": "dense", "units": 5}, {"type": "softmax"}],
    "tanh": [CONVS["valid"], {"type": "tanh"}, *HEAD],
    "sigmoid": [CONVS["valid"], {"type": "sigmoid"}, *HEAD],
    "dense-nobias-softmax-mid": [{"type": "flatten"}, {"type": "dense", "units": 6, "use_bias": False}, {"type": "softmax"}, {"type": "dense", "units": 5}],
}


def build(layers, shape=(3, 9, 9), seed=0) -> cnnkit.Model:
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(input={"shape": list(shape)}, layers=layers)
    model = cnnkit.build(spec)
    rng = np.random.default_rng(seed)
    for name, w in model.weights.items():  # non-zero biases, so a dropped or misplaced bias shows
        if name.endswith("bias"):
            w[...] = rng.normal(0, 0.3, w.shape)
    return model


def sgd_step_in_both(model: cnnkit.Model, x: np.ndarray, labels: np.ndarray, lr: float = 0.5) -> None:
    """One SGD step on ``model`` in cnnkit, one on its torch module; from_module must land on cnnkit's weights."""
    twin = cnnkit.Model(model.spec, {k: v.copy() for k, v in model.weights.items()}, classes=model.classes)
    module = to_module(twin, logits=True).train()
    y, backprop = model.forward(x, train=True, logits=True)
    _, dlogits = softmax_cross_entropy(y.reshape(len(y), -1), labels)
    SGD(SGD.Params(lr=lr), model.weights).step(model.weights, backprop(dlogits))

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels))
    loss.backward()
    optimizer.step()
    from_module(module, twin)
    for name in model.weights:
        np.testing.assert_allclose(twin.weights[name], model.weights[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_one_sgd_step_match_pytorch(case):
    model = build(CASES[case])
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (8, *model.input_shape)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    module = to_module(model)
    assert not module.training and len(module) == len(model.layers)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, model.forward(x)[0], rtol=0, atol=1e-5)
    before = {k: v.copy() for k, v in model.weights.items()}
    sgd_step_in_both(model, x, labels)
    assert all(not np.array_equal(before[k], model.weights[k]) for k in before), "the step must change every weight"


def test_from_module_writes_in_place_so_the_model_keeps_predicting_with_the_new_weights():
    model = build(CASES["relu"])
    module = to_module(model)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(-2.0)
    arrays = [model.weights[k] for k in model.weights]
    from_module(module, model)
    assert all(a is model.weights[k] for a, k in zip(arrays, model.weights))
    x = np.random.default_rng(3).normal(0, 1, (4, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.forward(x)[0], module(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-5)


def test_from_module_refuses_other_modules_and_bad_weights_without_changing_anything():
    model = build(CASES["relu"])
    before = {k: v.copy() for k, v in model.weights.items()}
    with pytest.raises(CnnkitError, match="needs the nn.Sequential that to_module built"):
        from_module(torch.nn.Linear(3, 3), model)
    with pytest.raises(CnnkitError, match="Received: a Sequential of 2 modules"):
        from_module(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.ReLU()), model)
    other = to_module(build([{"type": "conv2d", "filters": 3, "kernel_size": 3}, {"type": "relu"}, *HEAD]))
    with pytest.raises(CnnkitError, match=r"layer 0 \('conv2d'\) gave \[3, 3, 3, 3\] for weight '0.kernel', the model needs shape \[4, 3, 3, 3\]"):
        from_module(other, model)
    module = to_module(model)
    with torch.no_grad():
        module[3].bias[0] = float("nan")
    with pytest.raises(CnnkitError, match="'3.bias' holds NaN"):
        from_module(module, model)
    assert all(np.array_equal(before[k], model.weights[k]) for k in before)


def test_layer_without_hook_is_named(monkeypatch):
    from cnnkit.layers.activations import ReLU

    model = build(CASES["relu"])
    monkeypatch.setattr(ReLU, "to_torch", None)
    with pytest.raises(CnnkitError, match=r"cannot convert to PyTorch: layer 1 \('relu', from cnnkit \S+\) has no to_torch export hook"):
        to_module(model)
