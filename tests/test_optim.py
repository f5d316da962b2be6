"""Optimizers against torch.optim over a few steps on the same weights and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.optim import SGD, Adam

pytestmark = pytest.mark.torch

STEPS = 5


def _run_both(cnnkit_optimizer, torch_optimizer_factory):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weights = {"0.kernel": rng.normal(size=(3, 4)).astype(np.float32), "0.bias": rng.normal(size=4).astype(np.float32)}
    grads = [{k: rng.normal(size=w.shape).astype(np.float32) for k, w in weights.items()} for _ in range(STEPS)]
    tensors = {k: torch.tensor(w.copy(), requires_grad=True) for k, w in weights.items()}
    optimizer = cnnkit_optimizer(weights)
    reference = torch_optimizer_factory(list(tensors.values()))
    for step_grads in grads:
        optimizer.step(weights, step_grads)
        for k, t in tensors.items():
            t.grad = torch.tensor(step_grads[k])
        reference.step()
        for k, t in tensors.items():
            assert weights[k].dtype == np.float32
            np.testing.assert_allclose(weights[k], t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize(
    "params",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01},
        {"lr": 0.1, "weight_decay": 0.1},
    ],
)
def test_sgd_matches_torch(params):
    torch = pytest.importorskip("torch")
    _run_both(lambda w: SGD(SGD.Params(**params), w), lambda ts: torch.optim.SGD(ts, **params))


@pytest.mark.parametrize(
    "params",
    [
        {"lr": 0.01},
        {"lr": 0.002, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
        {"lr": 0.01, "weight_decay": 0.05},
    ],
)
def test_adam_matches_torch(params):
    torch = pytest.importorskip("torch")
    torch_params = {"lr": params["lr"], "betas": (params.get("beta1", 0.9), params.get("beta2", 0.999)), "eps": params.get("eps", 1e-8), "weight_decay": params.get("weight_decay", 0.0)}
    _run_both(lambda w: Adam(Adam.Params(**params), w), lambda ts: torch.optim.Adam(ts, **torch_params))
