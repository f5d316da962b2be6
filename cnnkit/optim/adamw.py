"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as torch.optim.AdamW."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveFloat

from .adam import Adam
from .base import OptimizerParams


class AdamW(Adam):
    """w *= 1 - lr * weight_decay, then the Adam move on the plain gradient (decay never enters m or v)."""

    class Params(OptimizerParams):
        type: Literal["adamw"] = "adamw"
        lr: PositiveFloat = 0.001
        beta1: float = Field(0.9, ge=0.0, lt=1.0)
        beta2: float = Field(0.999, ge=0.0, lt=1.0)
        eps: PositiveFloat = 1e-8
        weight_decay: NonNegativeFloat = 0.01

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for name, g in grads.items():
            w = weights[name]
            if self.params.weight_decay:
                w *= 1 - self.lr * self.params.weight_decay
            self._adam_update(name, w, g)
