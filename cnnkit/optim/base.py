"""The optimizer contract: a pydantic ``Params`` model, a settable ``lr``, and ``step`` updating weights in place."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..params import StrictParams


class OptimizerParams(StrictParams):
    """Base of every optimizer's spec fields (``train.optimizer``): strict, no unknown keys, no NaN/Infinity."""


class Optimizer:
    """Updates float32 weights in place from their gradients, one call of ``step`` per batch.

    ``lr`` starts at ``params.lr`` and may be changed between steps (a schedule does, before each step).
    ``momentum`` is the quantity a one-cycle schedule cycles: SGD's momentum, Adam's beta1 (as in torch).
    ``grads`` may hold fewer names than ``weights``: non-trainable weights have no gradient and stay as they are.
    """

    Params: ClassVar[type[OptimizerParams]]
    # Per-weight state maps (name -> {weight name: array}) whose values can never be negative (Adam's v):
    # a checkpoint holding a negative one is refused instead of turning into NaN at the next step.
    NON_NEGATIVE_STATE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: OptimizerParams, weights: dict[str, np.ndarray]):
        self.params = params
        self.lr: float = params.lr

    def step(self, weights: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        raise NotImplementedError
