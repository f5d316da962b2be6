"""The step schedule: the rate is multiplied by ``gamma`` every ``step_size`` optimizer steps (torch StepLR)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from .base import Schedule, ScheduleParams


class Step(Schedule):
    """lr(step) = base_lr * gamma ** (step // step_size); counted in batches, not epochs."""

    class Params(ScheduleParams):
        type: Literal["step"] = "step"
        step_size: PositiveInt = Field(description="optimizer steps (batches) between two decays; one epoch is ceil(train examples / batch_size)")
        gamma: float = Field(0.1, gt=0.0, description="factor applied at each decay")

    def lr(self, step: int) -> float:
        return self.base_lr * self.params.gamma ** (step // self.params.step_size)
