"""The constant schedule: every step uses the optimizer's ``lr`` (also what an absent ``train.schedule`` means)."""

from __future__ import annotations

from typing import Literal

from .base import Schedule, ScheduleParams


class Constant(Schedule):
    class Params(ScheduleParams):
        type: Literal["constant"] = "constant"

    def lr(self, step: int) -> float:
        return self.base_lr
