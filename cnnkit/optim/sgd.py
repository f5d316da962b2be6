"""SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD (dampening 0)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat

from .base import Optimizer, OptimizerParams


class SGD(Optimizer):
    """g += weight_decay * w;  v = momentum * v + g;  w -= lr * (g + momentum * v if nesterov else v)."""

    class Params(OptimizerParams):
        type: Literal["sgd"] = "sgd"
        lr: PositiveFloat = 0.01
        momentum: float = Field(0.0, ge=0.0, lt=1.0)
        nesterov: bool = False
        weight_decay: NonNegativeFloat = 0.0

    def __init__(self, params: Params, weights: dict[str, np.ndarray]):
        super().__init__(params, weights)
        self.momentum: float = params.momentum
        # One per weight from the start (zeros: the first step with momentum gives v = g, as torch's
        # first momentum_buffer), so a checkpoint always holds the whole map (a schedule may turn momentum on).
        self.velocity = {k: np.zeros_like(w) for k, w in weights.items()}

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        p = self.params
        for name, g in grads.items():
            w = weights[name]
            if p.weight_decay:
                g = g + p.weight_decay * w
            if self.momentum:
                v = self.velocity[name]
                v *= self.momentum
                v += g
                g = g + self.momentum * v if p.nesterov else v
            w -= self.lr * g
