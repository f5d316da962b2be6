"""An exponential moving average of a model's weights (spec ``train.ema``), updated after every optimizer step.

Every array of ``Model.weights`` is averaged, batch norm's running statistics too: the average of
the weights then runs with the average of the statistics the training batches produced under
those weights, over the same steps. That is what timm's ModelEmaV2/V3 do by default and what
``torch.optim.swa_utils.AveragedModel(use_buffers=True)`` does. Copying the live model's running
statistics instead (AveragedModel without use_buffers) would pair the averaged weights with
statistics of other weights: those of the last few batches of the live model, which the average
lags behind most early in a run, when it is scored after every epoch.

The update is torch's ``lerp``, in float32 as the weights are: ``average += (1 - d) * (w - average)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from ..runtime.model import Model
from ..spec.training import EmaSpec


def ema_decay(spec: EmaSpec, updates: int) -> float:
    """The decay of update number ``updates`` (0-based): 0 for the first (a copy), then the spec's, warmed up if asked."""
    if updates == 0:
        return 0.0
    if spec.warmup_power is None:
        return spec.decay
    return min(spec.decay, 1.0 - (1.0 + updates) ** -spec.warmup_power)


class WeightAverage:
    """The moving average of a model's weights: ``weights`` (name -> float32 array) after ``updates`` updates."""

    def __init__(self, spec: EmaSpec, weights: dict[str, np.ndarray] | None = None, updates: int = 0):
        self.spec = spec
        self.weights: dict[str, np.ndarray] = weights if weights is not None else {}
        self.updates = updates

    def update(self, weights: dict[str, np.ndarray]) -> None:
        """Move the average towards ``weights`` (the model's, just after an optimizer step)."""
        decay = ema_decay(self.spec, self.updates)
        if self.updates == 0:
            self.weights = {name: w.copy() for name, w in weights.items()}
        else:
            step = np.float32(1.0 - decay)
            for name, average in self.weights.items():
                w = weights[name]
                average += step * (w - average)
        self.updates += 1

    def copy_into(self, model: Model) -> None:
        """Make the average the model's weights (in place: the layers hold views of these arrays); before any update, nothing changes."""
        for name, average in self.weights.items():
            model.weights[name][...] = average

    @contextlib.contextmanager
    def in_model(self, model: Model) -> Iterator[None]:
        """The average as the model's weights inside the block (to score it), the trained weights back after."""
        if not self.updates:  # nothing averaged yet: the model's own weights are the average
            yield
            return
        trained = {name: w.copy() for name, w in model.weights.items()}
        self.copy_into(model)
        try:
            yield
        finally:
            for name, w in trained.items():
                model.weights[name][...] = w


def kept_weights(ema: WeightAverage | None, model: Model) -> dict[str, np.ndarray]:
    """A copy of the weights a run keeps: the average's once it has one, else the model's."""
    source = ema.weights if ema is not None and ema.updates else model.weights
    return {name: w.copy() for name, w in source.items()}


def averaged(ema: WeightAverage | None, model: Model) -> contextlib.AbstractContextManager:
    """``ema.in_model(model)``, or a block that changes nothing when the run keeps no average."""
    return ema.in_model(model) if ema is not None else contextlib.nullcontext()
