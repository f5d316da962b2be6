"""Learning-rate schedules, one file each, stepped once per batch; ``SCHEDULES`` maps a spec's type to its class."""

from __future__ import annotations

from .base import Schedule, ScheduleParams
from .constant import Constant
from .cosine import Cosine
from .onecycle import OneCycle
from .step import Step

SCHEDULES: dict[str, type[Schedule]] = {"constant": Constant, "step": Step, "cosine": Cosine, "onecycle": OneCycle}


def build_schedule(schedule: ScheduleParams | None, base_lr: float, total_steps: int | None = None) -> Schedule:
    """The schedule whose params a validated spec's ``train.schedule`` holds (None: constant) for an optimizer at ``base_lr``.

    ``total_steps`` is the run's length in optimizer steps (epochs * batches per epoch), or None when
    unknown; a schedule that needs a length and gets none raises a SpecError naming the JSON path.
    """
    if schedule is None:
        return Constant(Constant.Params(), base_lr, total_steps)
    return SCHEDULES[schedule.type](schedule, base_lr, total_steps)


__all__ = ["SCHEDULES", "Constant", "Cosine", "OneCycle", "Schedule", "ScheduleParams", "Step", "build_schedule"]
