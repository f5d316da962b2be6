"""Leaky ReLU: x where x > 0, negative_slope * x elsewhere (no weights)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from cnnkit.layers import Layer, LayerParams


class LeakyReLU(Layer):
    """Element-wise, any input shape. The gradient at exactly 0 is negative_slope, as in PyTorch."""

    class Params(LayerParams):
        negative_slope: float = Field(0.01, ge=0.0, description="slope for x <= 0 (PyTorch's default 0.01)")

    # No weights, no randomness, each sample alone: nothing to declare but the math. (The defaults:
    # weights() -> {}, batch_coupling = "per_sample", so cnnkit may split a training batch over threads.)

    def forward(self, weights, x, ctx):
        # Same dtype as x: a float64 slope would silently upcast float32 batches.
        scale = np.where(x > 0, x.dtype.type(1), x.dtype.type(self.params.negative_slope))
        y = x * scale

        def backprop(dy):
            return dy * scale, {}

        return y, backprop

    # Optional export hooks (cnnkit export --format onnx, cnnkit.torch): `g` and `t` are helpers
    # cnnkit passes in, so this file imports neither onnx nor torch.
    def to_onnx(self, g, x, weights, input_shape):
        return g.node("LeakyRelu", [x], alpha=self.params.negative_slope)

    def to_torch(self, t, weights, input_shape):
        return t.nn.LeakyReLU(self.params.negative_slope)
