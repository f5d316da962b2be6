"""Learning-rate schedules against torch.optim.lr_scheduler, stepped once per batch, over whole runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit.errors import SpecError
from cnnkit.optim import OPTIMIZERS, SCHEDULES, Adam, build_schedule


def _torch_rates(make_scheduler, steps: int, optimizer: str = "sgd", lr: float = 0.1):
    """The (lr, momentum) torch's optimizer holds before each of ``steps`` optimizer steps."""
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam([param], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    rates = []
    for _ in range(steps):
        group = opt.param_groups[0]
        rates.append((group["lr"], group["momentum"] if optimizer == "sgd" else group["betas"][0]))
        param.grad = torch.ones(1)
        opt.step()
        scheduler.step()
    return rates


def typed(raw: dict):
    """A schedule's typed params, as a validated spec's train.schedule holds them."""
    return SCHEDULES[raw["type"]].Params.model_validate(raw)


def _ours(schedule: dict, steps: int, base_lr: float = 0.1, total_steps: int | None = None) -> list[float]:
    s = build_schedule(typed(schedule), base_lr, total_steps if total_steps is not None else steps)
    return [s.lr(k) for k in range(steps)]


def _assert_same(ours: list[float], theirs: list[float]) -> None:
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (7, 0.1), (25, 0.9)])
def test_step_matches_steplr(step_size, gamma):
    theirs = _torch_rates(lambda s, o: s.StepLR(o, step_size=step_size, gamma=gamma), 60)
    _assert_same(_ours({"type": "step", "step_size": step_size, "gamma": gamma}, 60), [lr for lr, _ in theirs])


@pytest.mark.torch
@pytest.mark.parametrize("warmup, factor, min_lr, total", [(0, 0.01, 0.0, 50), (10, 0.01, 0.0, 100), (5, 0.25, 0.001, 37), (1, 0.5, 0.0, 2)])
def test_cosine_with_warmup_matches_linear_then_cosine(warmup, factor, min_lr, total):
    if warmup:
        def make(s, o):
            return s.SequentialLR(o, [s.LinearLR(o, start_factor=factor, end_factor=1.0, total_iters=warmup),
                                      s.CosineAnnealingLR(o, T_max=total - warmup, eta_min=min_lr)], milestones=[warmup])
    else:
        def make(s, o):
            return s.CosineAnnealingLR(o, T_max=total, eta_min=min_lr)
    theirs = _torch_rates(make, total)
    spec = {"type": "cosine", "warmup_steps": warmup, "warmup_start_factor": factor, "min_lr": min_lr}
    _assert_same(_ours(spec, total), [lr for lr, _ in theirs])


ONECYCLE_CASES = [
    {"max_lr": 0.003},
    {"max_lr": 0.1, "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
    {"max_lr": 0.05, "anneal_strategy": "linear"},
    {"max_lr": 0.05, "three_phase": True, "pct_start": 0.4},
    {"max_lr": 0.02, "base_momentum": 0.8, "max_momentum": 0.9, "three_phase": True},
]


@pytest.mark.torch
@pytest.mark.parametrize("params", ONECYCLE_CASES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_onecycle_matches_onecyclelr_with_momentum(params, optimizer):
    total = 97
    torch_kwargs = {k: v for k, v in params.items()}
    theirs = _torch_rates(lambda s, o: s.OneCycleLR(o, total_steps=total, **torch_kwargs), total, optimizer)
    schedule = build_schedule(typed({"type": "onecycle", **params}), 0.1, total)
    _assert_same([schedule.lr(k) for k in range(total)], [lr for lr, _ in theirs])
    _assert_same([schedule.momentum(k) for k in range(total)], [m for _, m in theirs])


@pytest.mark.torch
def test_onecycle_without_momentum_cycling_leaves_momentum_alone():
    schedule = build_schedule(typed({"type": "onecycle", "max_lr": 0.01, "cycle_momentum": False}), 0.1, 20)
    theirs = _torch_rates(lambda s, o: s.OneCycleLR(o, max_lr=0.01, total_steps=20, cycle_momentum=False), 20)
    _assert_same([schedule.lr(k) for k in range(20)], [lr for lr, _ in theirs])
    adam = Adam(Adam.Params(beta1=0.8), {})
    schedule.apply(adam, 3)
    assert schedule.momentum(3) is None and adam.beta1 == 0.8 and adam.lr == schedule.lr(3)


@pytest.mark.torch
def test_adam_under_onecycle_matches_torch_over_a_run():
    """The rate and beta1 a schedule sets are the ones the update uses (Adam's bias correction with a moving beta1)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    weights = {"w": rng.normal(size=(4, 3)).astype(np.float32)}
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(30)]
    tensor = torch.tensor(weights["w"].copy(), requires_grad=True)
    reference = torch.optim.Adam([tensor], lr=0.5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.01, total_steps=30)
    optimizer = OPTIMIZERS["adam"](Adam.Params(lr=0.5), weights)
    schedule = build_schedule(typed({"type": "onecycle", "max_lr": 0.01}), optimizer.lr, 30)
    for step, g in enumerate(grads):
        schedule.apply(optimizer, step)
        optimizer.step(weights, {"w": g})
        tensor.grad = torch.tensor(g)
        reference.step()
        scheduler.step()
        np.testing.assert_allclose(weights["w"], tensor.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_constant_and_absent_schedule_keep_the_rate():
    assert _ours({"type": "constant"}, 5, base_lr=0.3) == [0.3] * 5
    assert [build_schedule(None, 0.3).lr(k) for k in range(5)] == [0.3] * 5


def test_steps_past_the_total_keep_the_final_rate():
    cosine = build_schedule(typed({"type": "cosine", "min_lr": 0.001}), 0.1, 10)
    assert cosine.lr(10) == cosine.lr(1000) == pytest.approx(0.001)
    onecycle = build_schedule(typed({"type": "onecycle", "max_lr": 0.1}), 0.1, 10)
    assert onecycle.lr(9) == onecycle.lr(50) == pytest.approx(0.1 / 25 / 1e4)


def test_spec_total_steps_wins_over_the_run_length():
    schedule = build_schedule(typed({"type": "cosine", "total_steps": 4}), 1.0, 100)
    assert schedule.total_steps == 4 and schedule.lr(2) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", [k for k, cls in SCHEDULES.items() if cls.needs_total])
def test_schedule_without_a_total_length_is_a_one_line_error(kind):
    raw = {"type": kind, "max_lr": 0.1} if kind == "onecycle" else {"type": kind}
    with pytest.raises(SpecError) as err:
        build_schedule(typed(raw), 0.1, None)
    assert err.value.errors[0][0] == "train.schedule.total_steps"
    assert str(err.value).startswith("train.schedule.total_steps: ") and "\n" not in str(err.value)
    assert f"{kind!r} schedule needs a total length" in str(err.value)


def test_impossible_lengths_name_the_field():
    with pytest.raises(SpecError, match=r"^train\.schedule\.warmup_steps: must be less than the total length \(10 optimizer steps\).*Received: 10$"):
        build_schedule(typed({"type": "cosine", "warmup_steps": 10}), 0.1, 10)
    with pytest.raises(SpecError, match=r"^train\.schedule\.pct_start: leaves a phase without steps at a total length of 3 "):
        build_schedule(typed({"type": "onecycle", "max_lr": 0.1}), 0.1, 3)  # 0.3 * 3 - 1 < 0: torch would divide by zero
    assert math.isfinite(build_schedule(typed({"type": "onecycle", "max_lr": 0.1}), 0.1, 4).lr(0))
