"""Adam (Kingma & Ba) with bias correction and L2 weight decay added to the gradient, as torch.optim.Adam."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat

from .base import Optimizer, OptimizerParams


class Adam(Optimizer):
    """m, v: running means of g and g²;  w -= lr * m̂ / (sqrt(v̂) + eps), with m̂, v̂ bias-corrected."""

    NON_NEGATIVE_STATE = ("v",)

    class Params(OptimizerParams):
        type: Literal["adam"] = "adam"
        lr: PositiveFloat = 0.001
        beta1: float = Field(0.9, ge=0.0, lt=1.0)
        beta2: float = Field(0.999, ge=0.0, lt=1.0)
        eps: PositiveFloat = 1e-8
        weight_decay: NonNegativeFloat = 0.0

    def __init__(self, params: Params, weights: dict[str, np.ndarray]):
        super().__init__(params, weights)
        self.beta1: float = params.beta1
        self.t = 0
        self.m = {k: np.zeros_like(w) for k, w in weights.items()}
        self.v = {k: np.zeros_like(w) for k, w in weights.items()}

    @property
    def momentum(self) -> float:
        """beta1, the momentum a one-cycle schedule cycles (torch does the same for Adam)."""
        return self.beta1

    @momentum.setter
    def momentum(self, value: float) -> None:
        self.beta1 = value

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for name, g in grads.items():
            if self.params.weight_decay:
                g = g + self.params.weight_decay * weights[name]
            self._adam_update(name, weights[name], g)

    def _adam_update(self, name: str, w: np.ndarray, g: np.ndarray) -> None:
        """The Adam move of ``w`` for gradient ``g`` at step ``self.t`` (shared with AdamW)."""
        beta1, beta2, t = self.beta1, self.params.beta2, self.t
        m, v = self.m[name], self.v[name]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        # torch's eps sits outside the bias-corrected sqrt(v); fold the correction in accordingly.
        correction2 = np.sqrt(1 - beta2**t)
        w -= (self.lr * correction2 / (1 - beta1**t)) * m / (np.sqrt(v) + self.params.eps * correction2)
