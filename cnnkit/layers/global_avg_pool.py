"""Global average pooling: the mean of each channel over all positions, (C, H, W) -> (C,),
as torch's adaptive_avg_pool2d(x, 1) flattened."""

from __future__ import annotations

import numpy as np

from .base import Layer


class GlobalAvgPool2D(Layer):
    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"global_avg_pool2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        return (input_shape[0],)

    def forward(self, weights, x, ctx):
        n, c, h, w = x.shape
        y = x.mean(axis=(2, 3))  # (N, C)

        def backprop(dy):
            # every position of a channel gets an equal share of that channel's gradient
            share = dy / dy.dtype.type(h * w)
            return np.broadcast_to(share[:, :, None, None], (n, c, h, w)).copy(), {}

        return y, backprop

    # -- export hooks: the mean over H and W, flat (N, C) as forward gives it

    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)

    def to_torch(self, t, weights, input_shape):
        return t.nn.Sequential(t.nn.AdaptiveAvgPool2d(1), t.nn.Flatten())
