"""Element-wise and row-wise activations: relu and softmax (no weights)."""

from __future__ import annotations

import numpy as np

from .base import Layer


class ReLU(Layer):
    """max(x, 0). The gradient at exactly 0 is taken as 0, as in PyTorch."""

    def forward(self, weights, x, ctx):
        y = np.maximum(x, x.dtype.type(0))  # the mask is rebuilt from y in backprop, so inference skips it

        def backprop(dy):
            return dy * (y > 0), {}

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Relu", [x])

    def to_torch(self, t, weights, input_shape):
        return t.nn.ReLU()


class Softmax(Layer):
    """Softmax over the feature axis of a flat (N, features) input, shifted by the row max."""

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"softmax expects a flat input (features,); add a flatten layer before it. Received: input_shape={list(input_shape)}")
        return tuple(input_shape)

    def forward(self, weights, x, ctx):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)

        def backprop(dy):
            # Jacobian-vector product of softmax: y * (dy - <dy, y>)
            return y * (dy - (dy * y).sum(axis=1, keepdims=True)), {}

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Softmax", [x], axis=1)

    def to_torch(self, t, weights, input_shape):
        return t.nn.Softmax(dim=1)
