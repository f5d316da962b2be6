"""Export hooks of cnnkit-extra's leaky_relu beside core batchnorm2d: they convert to PyTorch (forward, one SGD step with batch-norm
running statistics, weights back) and to ONNX (onnxruntime equals predict_proba)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.runtime.losses import softmax_cross_entropy
from cnnkit.optim import SGD

SPEC = {
    "name": "extra-hooks",
    "input": {"shape": [2, 8, 8], "preprocess": {"divide": 255.0, "subtract": 0.5}},
    "layers": [
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "batchnorm2d", "momentum": 0.3, "eps": 1e-3},
        {"type": "leaky_relu", "negative_slope": 0.2},
        {"type": "flatten"},
        {"type": "dense", "units": 4},
        {"type": "softmax"},
    ],
    "data": {"dataset": "fashion-mnist"},
    "train": {"epochs": 1, "batch_size": 8, "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 0},
}


def model_with_statistics() -> cnnkit.Model:
    """Non-trivial gamma, beta and running statistics, so a swapped or dropped one shows."""
    model = cnnkit.build(SPEC)
    rng = np.random.default_rng(0)
    for name in ("gamma", "beta", "running_mean"):
        model.weights[f"1.{name}"][...] = rng.normal(0.5, 0.3, 3)
    model.weights["1.running_var"][...] = rng.uniform(0.5, 2.0, 3)
    return model


@pytest.mark.torch
def test_torch_forward_and_one_training_step_match():
    torch = pytest.importorskip("torch")
    from cnnkit.torch import from_module, to_module

    model = model_with_statistics()
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (8, 2, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    with torch.no_grad():
        np.testing.assert_allclose(to_module(model)(torch.from_numpy(x)).numpy(), model.forward(x)[0], rtol=0, atol=1e-5)

    twin = cnnkit.Model(model.spec, {k: v.copy() for k, v in model.weights.items()})
    module = to_module(twin, logits=True).train()  # batch statistics, running statistics updated
    y, backprop = model.forward(x, train=True, logits=True)
    SGD(SGD.Params(lr=0.5), model.weights).step(model.weights, backprop(softmax_cross_entropy(y, labels)[1]))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels)).backward()
    optimizer.step()
    from_module(module, twin)
    for name in model.weights:
        np.testing.assert_allclose(twin.weights[name], model.weights[name], rtol=0, atol=1e-5, err_msg=name)
    assert not np.allclose(model.weights["1.running_var"], model_with_statistics().weights["1.running_var"])


@pytest.mark.onnx
def test_onnx_export_matches_predict_proba():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnnkit.export.onnx import to_onnx

    model = model_with_statistics()
    proto = to_onnx(model)
    pixels = np.random.default_rng(2).integers(0, 256, (16, 2, 8, 8)).astype(np.uint8)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), rtol=0, atol=1e-5)
