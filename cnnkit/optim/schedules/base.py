"""The schedule contract: the learning rate (and, optionally, momentum) for each 0-based optimizer step."""

from __future__ import annotations

from typing import ClassVar, NoReturn

from ...errors import SpecError
from ...params import StrictParams
from ..base import Optimizer

WHERE = "train.schedule"  # the spec key every schedule comes from; errors name their field below it


class ScheduleParams(StrictParams):
    """Base of every schedule's spec fields (``train.schedule``): strict, no unknown keys, no NaN/Infinity."""


class Schedule:
    """A learning-rate schedule stepped per batch: ``lr(step)`` is the rate of optimizer step ``step`` (0-based).

    Built from its params, the optimizer's configured rate ``base_lr`` and the run's length in optimizer
    steps (``total_steps``; the spec's own ``total_steps``, where a schedule has one, wins). A schedule
    that ``needs_total`` and gets none raises a one-line SpecError naming ``train.schedule.total_steps``.
    Steps past the total keep the final rate.
    """

    Params: ClassVar[type[ScheduleParams]]
    needs_total: ClassVar[bool] = False

    def __init__(self, params: ScheduleParams, base_lr: float, total_steps: int | None = None):
        self.params = params
        self.base_lr = base_lr
        self.total_steps = getattr(params, "total_steps", None) or total_steps
        if self.needs_total and self.total_steps is None:
            self.fail("total_steps", f"the {params.type!r} schedule needs a total length in optimizer steps and none is known; "
                                     "give total_steps. Received: no total_steps")

    def fail(self, field: str, message: str) -> NoReturn:
        raise SpecError([(f"{WHERE}.{field}", message)])

    def lr(self, step: int) -> float:
        raise NotImplementedError

    def momentum(self, step: int) -> float | None:
        """The optimizer's momentum (Adam: beta1) for ``step``, or None to leave it alone."""
        return None

    def apply(self, optimizer: Optimizer, step: int) -> float:
        """Set ``optimizer``'s rate (and momentum, if this schedule cycles it) for ``step``; returns the rate."""
        optimizer.lr = self.lr(step)
        momentum = self.momentum(step)
        if momentum is not None:
            optimizer.momentum = momentum
        return optimizer.lr
