"""The one-cycle schedule (Smith & Topin) with torch.optim.lr_scheduler.OneCycleLR's parameters and defaults.

The rate rises from max_lr / div_factor to max_lr over the first pct_start of the steps, then falls to
max_lr / div_factor / final_div_factor; momentum (Adam: beta1) moves the opposite way between
max_momentum and base_momentum when cycle_momentum is on. The optimizer's own lr is not used.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from .base import Schedule, ScheduleParams


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


class OneCycle(Schedule):
    needs_total = True

    class Params(ScheduleParams):
        type: Literal["onecycle"] = "onecycle"
        max_lr: PositiveFloat = Field(description="the peak rate")
        total_steps: PositiveInt | None = Field(None, description="length in optimizer steps; default: the run's, epochs * batches per epoch")
        pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="fraction of the steps spent raising the rate")
        anneal_strategy: Literal["cos", "linear"] = "cos"
        div_factor: PositiveFloat = Field(25.0, description="the first rate is max_lr / div_factor")
        final_div_factor: PositiveFloat = Field(1e4, description="the last rate is max_lr / div_factor / final_div_factor")
        three_phase: bool = Field(False, description="come back to the first rate before the final annealing (torch three_phase)")
        cycle_momentum: bool = Field(True, description="cycle the optimizer's momentum (Adam: beta1) inversely to the rate")
        base_momentum: float = Field(0.85, ge=0.0, lt=1.0, description="momentum at the peak rate")
        max_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="momentum at the start and end")

    def __init__(self, params: Params, base_lr: float, total_steps: int | None = None):
        super().__init__(params, base_lr, total_steps)
        p, total = params, self.total_steps
        initial = p.max_lr / p.div_factor
        lows = (initial, p.max_lr, initial / p.final_div_factor)
        momenta = (p.max_momentum, p.base_momentum, p.max_momentum)
        # Phases as torch builds them: (last step, rate at start, rate at end, momentum at start, at end).
        if p.three_phase:
            ends = [p.pct_start * total - 1, 2 * p.pct_start * total - 2, total - 1]
            self.phases = [(ends[0], lows[0], lows[1], momenta[0], momenta[1]),
                           (ends[1], lows[1], lows[0], momenta[1], momenta[0]),
                           (ends[2], lows[0], lows[2], momenta[0], momenta[0])]
        else:
            ends = [p.pct_start * total - 1, total - 1]
            self.phases = [(ends[0], lows[0], lows[1], momenta[0], momenta[1]),
                           (ends[1], lows[1], lows[2], momenta[1], momenta[0])]
        # torch divides by each phase's length; a phase of zero steps would divide by zero there.
        if not all(b > a for a, b in zip([0.0, *ends], ends)):
            self.fail("pct_start", f"leaves a phase without steps at a total length of {total} optimizer steps "
                                   f"(each phase needs pct_start * total_steps > 1{' and < (total_steps + 1) / 2' if p.three_phase else ''}). "
                                   f"Received: {p.pct_start}")
        self._anneal = _anneal_cos if p.anneal_strategy == "cos" else _anneal_linear

    def _at(self, step: int) -> tuple[float, float]:
        step = min(step, self.total_steps - 1)
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                return self._anneal(lr0, lr1, pct), self._anneal(m0, m1, pct)
            start = end
        raise AssertionError("unreachable: the last phase always answers")

    def lr(self, step: int) -> float:
        return self._at(step)[0]

    def momentum(self, step: int) -> float | None:
        return self._at(step)[1] if self.params.cycle_momentum else None
