"""Hyperbolic tangent, element-wise (no weights), as torch.tanh."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Tanh(Layer):
    def forward(self, weights, x, ctx):
        y = np.tanh(x)

        def backprop(dy):
            return dy * (1 - y * y), {}  # tanh' = 1 - tanh^2, from the output: no second tanh

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Tanh", [x])

    def to_torch(self, t, weights, input_shape):
        return t.nn.Tanh()
