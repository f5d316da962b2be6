"""Optimizers (one file each), learning-rate schedules (``schedules/``) and gradient clipping.

``OPTIMIZERS`` and ``SCHEDULES`` map the ``type`` of ``train.optimizer`` / ``train.schedule`` to a class
whose ``Params`` validates the rest of that object. The training loop builds both, then per batch:
``schedule.apply(optimizer, step)`` (sets ``optimizer.lr``), ``clip_grad_norm(grads, max_norm)``,
``optimizer.step(weights, grads)``.
"""

from __future__ import annotations

from .adam import Adam
from .adamw import AdamW
from .base import Optimizer, OptimizerParams
from .clip import clip_grad_norm
from .schedules import SCHEDULES, Schedule, ScheduleParams, build_schedule
from .sgd import SGD

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "Optimizer", "OptimizerParams", "Schedule",
           "ScheduleParams", "build_schedule", "clip_grad_norm"]
