"""Logistic sigmoid 1 / (1 + exp(-x)), element-wise (no weights), as torch.sigmoid."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Sigmoid(Layer):
    def forward(self, weights, x, ctx):
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: the same function without exp(-x) overflowing for
        # large negative x, and one ufunc pass fewer than a two-branch formula.
        y = np.tanh(x * 0.5)  # a Python float keeps float32 arrays float32
        y += 1
        y *= 0.5

        def backprop(dy):
            return dy * (y * (1 - y)), {}  # sigmoid' = s (1 - s), from the output

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Sigmoid", [x])

    def to_torch(self, t, weights, input_shape):
        return t.nn.Sigmoid()
