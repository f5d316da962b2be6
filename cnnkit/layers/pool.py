"""2-D max pooling over NCHW batches (no padding, floor mode, as in PyTorch's defaults)."""

from __future__ import annotations

import numpy as np
from pydantic import Field, PositiveInt, model_validator

from .base import Layer, LayerParams
from .kernels.window_max import window_max


class PoolParams(LayerParams):
    """A square window and its stride: the params every 2-D pooling layer shares."""

    pool_size: PositiveInt = 2
    stride: PositiveInt | None = Field(None, description="default (or null): pool_size, non-overlapping windows")

    @model_validator(mode="before")
    @classmethod
    def _fill_stride(cls, data):
        # Filled in here so a validated spec (and a bundle) stores the stride used; null is still
        # accepted, as format 1.0 bundles stored it.
        if isinstance(data, dict) and data.get("stride") is None:
            pool = data.get("pool_size", 2)
            if type(pool) is int and pool > 0:
                return {**data, "stride": pool}
        return data


class MaxPool2D(Layer):
    class Params(PoolParams):
        pass

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"maxpool2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        c, h, w = input_shape
        k, s = self.params.pool_size, self.params.stride
        out_h, out_w = (h - k) // s + 1, (w - k) // s + 1
        if h < k or w < k:
            raise ValueError(f"output would be empty: pool_size={k} is larger than the input. Received: input_shape={list(input_shape)}")
        return (c, out_h, out_w)

    def forward(self, weights, x, ctx):
        _, c, h, w = x.shape
        k, s = self.params.pool_size, self.params.stride
        _, out_h, out_w = self.output_shape((c, h, w))

        def at(a, i, j):  # the (i, j) element of every window, as one strided (N, C, Ho, Wo) view
            return a[:, :, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s]

        y = window_max(x, k, s, out_h, out_w)  # rows' maxima, then columns' (kernels/window_max)
        offsets = [(i, j) for i in range(k) for j in range(k)]

        def backprop(dy):
            # Route each output gradient to the first input position (in window order) equal to the
            # maximum, as PyTorch does; `taken` keeps later ties from getting it too. Finding it
            # here rather than tracking it in forward keeps inference at the bare max passes.
            dx = np.zeros_like(x)
            taken = np.zeros(y.shape, bool)
            for i, j in offsets:
                hit = at(x, i, j) == y
                np.greater(hit, taken, out=hit)  # hit and not taken
                taken |= hit
                if s >= k:  # windows don't overlap: each input position gets at most one gradient
                    np.multiply(dy, hit, out=at(dx, i, j))
                else:  # overlapping windows share input positions
                    at(dx, i, j)[...] += dy * hit
            return dx, {}

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        k, s = self.params.pool_size, self.params.stride
        return g.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s])

    def to_torch(self, t, weights, input_shape):
        return t.nn.MaxPool2d(self.params.pool_size, self.params.stride)
