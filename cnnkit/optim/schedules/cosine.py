"""Cosine annealing after a linear warm-up (torch: SequentialLR of LinearLR then CosineAnnealingLR)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from .base import Schedule, ScheduleParams


class Cosine(Schedule):
    """Warm-up: base_lr * (f + (1 - f) * step / warmup_steps), f = warmup_start_factor.

    Then half a cosine from base_lr down to min_lr over the remaining total_steps - warmup_steps steps.
    """

    needs_total = True

    class Params(ScheduleParams):
        type: Literal["cosine"] = "cosine"
        warmup_steps: NonNegativeInt = Field(0, description="optimizer steps of linear warm-up before the cosine starts")
        warmup_start_factor: float = Field(0.01, gt=0.0, le=1.0, description="the first warm-up step's rate, as a fraction of lr")
        min_lr: NonNegativeFloat = Field(0.0, description="the rate the cosine ends at (torch eta_min)")
        total_steps: PositiveInt | None = Field(None, description="length in optimizer steps; default: the run's, epochs * batches per epoch")

    def __init__(self, params: Params, base_lr: float, total_steps: int | None = None):
        super().__init__(params, base_lr, total_steps)
        if params.warmup_steps >= self.total_steps:
            self.fail("warmup_steps", f"must be less than the total length ({self.total_steps} optimizer steps) "
                                      f"so the cosine has steps to run. Received: {params.warmup_steps}")

    def lr(self, step: int) -> float:
        p = self.params
        if step < p.warmup_steps:
            return self.base_lr * (p.warmup_start_factor + (1.0 - p.warmup_start_factor) * step / p.warmup_steps)
        length = self.total_steps - p.warmup_steps
        done = min(step - p.warmup_steps, length)
        return p.min_lr + (self.base_lr - p.min_lr) * (1.0 + math.cos(math.pi * done / length)) / 2.0
