"""Optimizers against torch.optim over a few steps on the same weights and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.optim import OPTIMIZERS, SGD, Adam, AdamW, clip_grad_norm

STEPS = 5


def _run_both(cnnkit_optimizer, torch_optimizer_factory, rates=None):
    """Step both optimizers on the same weights and gradients (at ``rates[i]`` for step i, when given)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weights = {"0.kernel": rng.normal(size=(3, 4)).astype(np.float32), "0.bias": rng.normal(size=4).astype(np.float32)}
    grads = [{k: rng.normal(size=w.shape).astype(np.float32) for k, w in weights.items()} for _ in range(STEPS)]
    tensors = {k: torch.tensor(w.copy(), requires_grad=True) for k, w in weights.items()}
    optimizer = cnnkit_optimizer(weights)
    reference = torch_optimizer_factory(list(tensors.values()))
    for i, step_grads in enumerate(grads):
        if rates is not None:
            optimizer.lr = reference.param_groups[0]["lr"] = rates[i]
        optimizer.step(weights, step_grads)
        for k, t in tensors.items():
            t.grad = torch.tensor(step_grads[k])
        reference.step()
        for k, t in tensors.items():
            assert weights[k].dtype == np.float32
            np.testing.assert_allclose(weights[k], t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.torch
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


@pytest.mark.torch
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


def _torch_adam_kwargs(params, default_decay):
    return {"lr": params.get("lr", 0.001), "betas": (params.get("beta1", 0.9), params.get("beta2", 0.999)),
            "eps": params.get("eps", 1e-8), "weight_decay": params.get("weight_decay", default_decay)}


@pytest.mark.torch
@pytest.mark.parametrize(
    "params",
    [
        {},  # both default to weight_decay 0.01
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.003, "beta1": 0.85, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.0},
    ],
)
def test_adamw_matches_torch(params):
    torch = pytest.importorskip("torch")
    _run_both(lambda w: AdamW(AdamW.Params(**params), w), lambda ts: torch.optim.AdamW(ts, **_torch_adam_kwargs(params, 0.01)))


@pytest.mark.torch
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_changed_lr_is_used_by_the_next_step(kind):
    """What a schedule relies on: setting ``lr`` between steps acts like setting torch's param_groups[0]["lr"]."""
    torch = pytest.importorskip("torch")
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    extra = {"momentum": 0.9} if kind == "sgd" else {"weight_decay": 0.05}
    cls = OPTIMIZERS[kind]
    _run_both(lambda w: cls(cls.Params(lr=0.5, **extra), w), lambda ts: torch_cls(ts, lr=0.5, **extra), rates=[0.1, 0.03, 0.0, 0.2, 0.01])


def test_optimizers_skip_weights_without_gradients():
    for kind, cls in OPTIMIZERS.items():
        weights = {"a": np.ones(3, np.float32), "running_mean": np.full(3, 2.0, np.float32)}
        cls(cls.Params(lr=0.1, weight_decay=0.1), weights).step(weights, {"a": np.ones(3, np.float32)})
        assert np.all(weights["running_mean"] == 2.0), kind
        assert np.all(weights["a"] < 1.0), kind


def test_optimizer_params_reject_non_finite_numbers():
    from pydantic import ValidationError

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            AdamW.Params(lr=value)
        with pytest.raises(ValidationError):
            SGD.Params(weight_decay=value)


@pytest.mark.torch
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = {"0.kernel": rng.normal(size=(3, 5)).astype(np.float32), "0.bias": rng.normal(size=5).astype(np.float32)}
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    before = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    expected = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    total = clip_grad_norm(grads, max_norm)
    assert total == pytest.approx(expected, rel=1e-6) and total == pytest.approx(before)
    for t, (name, g) in zip(tensors, grads.items()):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    clipped = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert clipped == pytest.approx(min(total, max_norm), rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients_untouched():
    g = np.array([0.3, 0.4], np.float32)
    grads = {"w": g}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5)
    assert grads["w"] is g and clip_grad_norm({}, 1.0) == 0.0
