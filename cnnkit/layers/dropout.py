"""Inverted dropout (Srivastava et al. 2014), as torch.nn.Dropout: in training each element is zeroed
with probability ``rate`` and the survivors are scaled by 1 / (1 - rate); in inference, identity.

The mask is drawn from the context's generator (``ctx.rng``, derived from the seed, epoch, step,
layer index and batch part), so a new mask every step and the same masks for the same run.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import Layer, LayerParams


class Dropout(Layer):
    class Params(LayerParams):
        rate: float = Field(0.5, ge=0.0, lt=1.0, description="probability of zeroing each element in training (PyTorch's p)")

    # Each sample's mask is drawn from its part's generator and touches that sample alone: the
    # default batch_coupling, "per_sample".
    def forward(self, weights, x, ctx):
        rate = self.params.rate
        if not ctx.train or rate == 0.0:
            return x, lambda dy: (dy, {})
        rng = ctx.rng
        if rng is None:
            raise ValueError("dropout needs a random generator in training: call forward(..., Context(train=True, rng=np.random.default_rng(...))); Model.forward passes one")
        # One uniform draw per element; float32 draws are half the work of float64 ones.
        scale = (rng.random(x.shape, dtype=np.float32) >= np.float32(rate)) * x.dtype.type(1.0 / (1.0 - rate))
        y = x * scale

        def backprop(dy):
            return dy * scale, {}

        return y, backprop

    # -- export hooks: identity in an inference graph; torch's Dropout (its own random stream) in a module

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Identity", [x])

    def to_torch(self, t, weights, input_shape):
        return t.nn.Dropout(self.params.rate)
