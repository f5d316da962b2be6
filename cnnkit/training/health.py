"""Training health: a non-finite loss stops the run at its step; a useless result ends it with a warning.

Two signs that a finished run produced nothing useful are reported as ``TrainingWarning`` (the CLI
prints them even with ``--quiet``, and ``cnnkit run --strict`` fails on them):

- the loss grew: the last epoch's mean training loss is more than ``GROWTH_FACTOR`` times its start
  (the first step's loss, or ln(classes) — a uniform guess — if that is larger);
- the final accuracy is at chance level: no better than always answering the most common class of
  the scored set, within two binomial standard errors (so a small scored set raises fewer false alarms).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError

GROWTH_FACTOR = 10.0


class TrainingDiverged(DataError):
    """The loss became NaN or infinite at a step; training stopped there."""


class TrainingWarning(UserWarning):
    """A training run finished, but its result is very likely useless (diverged, or at chance level)."""


def divergence_message(epoch: int, step: int, steps: int, loss: float, lr: float | None) -> str:
    """The one line for a non-finite loss at 1-based ``step`` of ``epoch`` (``lr``: the rate of the last update)."""
    where = f"training diverged at epoch {epoch}, step {step} of {steps}: the loss is {loss}"
    if lr is None:  # before any update: the learning rate cannot be the cause
        return f"{where} before any weight update; check input.preprocess and the layers' initialisation (init_std)"
    return f"{where} (lr {lr:g}); lower train.optimizer.lr"


def loss_growth_warning(first_loss: float, final_loss: float, classes: int) -> str | None:
    start = max(first_loss, math.log(classes)) if classes > 1 else first_loss
    if final_loss > GROWTH_FACTOR * start:
        return (f"the training loss grew from {start:.4g} to {final_loss:.4g} (more than {GROWTH_FACTOR:g}x): "
                f"training diverged; lower train.optimizer.lr")
    return None


def chance_level(labels: np.ndarray) -> tuple[float, float]:
    """(chance accuracy, margin): the share of the most common class, and two binomial standard errors of it."""
    labels = np.asarray(labels, dtype=np.int64)
    chance = float(np.bincount(labels).max() / len(labels))
    return chance, 2 * math.sqrt(chance * (1 - chance) / len(labels))


def chance_warning(accuracy: float, labels: np.ndarray, split: str) -> str | None:
    if not len(labels) or not math.isfinite(accuracy):
        return None
    chance, margin = chance_level(labels)
    if chance + margin >= 1:  # e.g. a one-class test subset: no accuracy could tell a model from a guess
        return None
    if accuracy <= chance + margin:
        return (f"the final {split} accuracy {accuracy:.4f} is at chance level (always answering the most common class "
                f"scores {chance:.4f}, +-{margin:.4f} on {len(labels)} examples): the model learned nothing useful")
    return None
