"""The stepper contract: what the one training loop asks of an engine (see the package docstring)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Stepper:
    """The step of one engine; ``start`` binds it to a model and the run's state, ``close`` ends it."""

    name = "numpy"
    rank, world = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, model, state, sample: np.ndarray) -> None:
        """Bind to ``model`` and ``state`` (its optimizer holds the state to go on from). ``sample``: a few
        preprocessed examples the stepper may check itself on at each epoch end."""
        raise NotImplementedError

    def loss(self, x: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> float:
        """The forward pass on a (global) batch of model input; returns its mean loss, the same in every process."""
        raise NotImplementedError

    def update(self) -> None:
        """The backward pass, gradient clipping and the optimizer step at the rate (and momentum) the schedule set."""
        raise NotImplementedError

    def average(self, ema) -> None:
        """Move ``ema`` (a training.ema.WeightAverage, with train.ema) towards the weights just trained, after ``update``.
        ``ema.weights`` must hold the average by the next ``sync``."""
        raise NotImplementedError

    def sync(self) -> None:
        """The trained weights and optimizer state into the model and the state (before scoring, checkpoints, the end).
        Every process calls it at the same point."""

    def any_rank(self, flag: bool) -> bool:
        """Whether any process says ``flag`` (every process calls it at the same point)."""
        return flag

    def share(self, value: int) -> int:
        """Rank 0's ``value``, in every process."""
        return value

    def close(self, finished: bool = False) -> None:
        """Training is over (``finished``: every epoch ran in every process; else it stopped or failed)."""

    def describe(self) -> dict[str, Any] | None:
        """What a bundle records about the engine, when it is not cnnkit's own runtime."""
        return None

    def banner(self) -> str:
        """How the session's first line names the engine ("" for cnnkit's own runtime)."""
        return ""
