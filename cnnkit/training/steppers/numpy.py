"""cnnkit's own runtime as a stepper: ``Model.forward`` and its backprop, the cnnkit optimizer."""

from __future__ import annotations

import numpy as np

from ...optim import clip_grad_norm
from ...runtime.losses import softmax_cross_entropy
from .base import Stepper


class NumpyStepper(Stepper):
    """The weights are trained in place in ``model.weights``, so there is nothing to sync."""

    def start(self, model, state, sample: np.ndarray) -> None:
        self.model, self.optimizer, self.settings = model, state.optimizer, model.spec.train

    def loss(self, x: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> float:
        # key: random layers (dropout) draw from (seed, epoch, step, layer, part) — see Model.forward.
        logits, self._backprop = self.model.forward(x, train=True, logits=True, key=(epoch, step))
        loss, self._dlogits = softmax_cross_entropy(logits, labels, self.settings.label_smoothing)
        return loss

    def update(self) -> None:
        grads = self._backprop(self._dlogits)
        if self.settings.clip_grad_norm is not None:
            clip_grad_norm(grads, self.settings.clip_grad_norm)
        self.optimizer.step(self.model.weights, grads)
        self._backprop = self._dlogits = None

    def average(self, ema) -> None:
        ema.update(self.model.weights)
