"""Optimizers: plain/momentum SGD and Adam, updating float32 weights in place."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat


class OptimizerParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SGD:
    """w -= lr * (g + weight_decay * w), with optional (Nesterov) momentum as in torch.optim.SGD."""

    class Params(OptimizerParams):
        type: Literal["sgd"] = "sgd"
        lr: PositiveFloat = 0.01
        momentum: float = Field(0.0, ge=0.0, lt=1.0)
        nesterov: bool = False
        weight_decay: NonNegativeFloat = 0.0

    def __init__(self, params: Params, weights: dict[str, np.ndarray]):
        self.params = params
        self.velocity = {k: np.zeros_like(w) for k, w in weights.items()} if params.momentum else {}

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        p = self.params
        for name, g in grads.items():
            w = weights[name]
            if p.weight_decay:
                g = g + p.weight_decay * w
            if p.momentum:
                v = self.velocity[name]
                v *= p.momentum
                v += g
                g = g + p.momentum * v if p.nesterov else v
            w -= p.lr * g


class Adam:
    """Adam (Kingma & Ba) with bias correction, matching torch.optim.Adam's defaults."""

    class Params(OptimizerParams):
        type: Literal["adam"] = "adam"
        lr: PositiveFloat = 0.001
        beta1: float = Field(0.9, ge=0.0, lt=1.0)
        beta2: float = Field(0.999, ge=0.0, lt=1.0)
        eps: PositiveFloat = 1e-8
        weight_decay: NonNegativeFloat = 0.0

    def __init__(self, params: Params, weights: dict[str, np.ndarray]):
        self.params = params
        self.t = 0
        self.m = {k: np.zeros_like(w) for k, w in weights.items()}
        self.v = {k: np.zeros_like(w) for k, w in weights.items()}

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        p = self.params
        self.t += 1
        step = p.lr * np.sqrt(1 - p.beta2**self.t) / (1 - p.beta1**self.t)
        for name, g in grads.items():
            w, m, v = weights[name], self.m[name], self.v[name]
            if p.weight_decay:
                g = g + p.weight_decay * w
            m *= p.beta1
            m += (1 - p.beta1) * g
            v *= p.beta2
            v += (1 - p.beta2) * g * g
            # torch's eps sits outside the bias-corrected sqrt(v); fold the correction in accordingly.
            w -= step * m / (np.sqrt(v) + p.eps * np.sqrt(1 - p.beta2**self.t))


OPTIMIZERS: dict[str, type] = {"sgd": SGD, "adam": Adam}
Optimizer = SGD | Adam
