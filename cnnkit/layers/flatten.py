"""Flatten (C, H, W) features into one axis, keeping the batch axis."""

from __future__ import annotations

import math

from .base import Layer


class Flatten(Layer):
    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, weights, x, ctx):
        shape = x.shape

        def backprop(dy):
            return dy.reshape(shape), {}

        return x.reshape(shape[0], math.prod(shape[1:])), backprop  # not -1: that fails on an empty batch

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Flatten", [x], axis=1)

    def to_torch(self, t, weights, input_shape):
        return t.nn.Flatten()
