"""2-D average pooling over NCHW batches, as torch.nn.AvgPool2d (floor mode).

Zero padding of ``padding`` on each side, at most half the window as in PyTorch. With
``count_include_pad`` true (PyTorch's default) every window is divided by pool_size², padded zeros
included; false divides each window by the number of real input positions it covers.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, NonNegativeInt

from .base import Layer
from .pool import PoolParams


class AvgPool2D(Layer):
    class Params(PoolParams):
        padding: NonNegativeInt = Field(0, description="zeros on each side, at most pool_size // 2")
        count_include_pad: bool = Field(True, description="padded zeros count in each window's mean (PyTorch's default)")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"avgpool2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        c, h, w = input_shape
        k, s, p = self.params.pool_size, self.params.stride, self.params.padding
        if p > k // 2:
            raise ValueError(f"padding must be at most half of pool_size ({k // 2}), as in PyTorch. Received: padding={p}")
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(f"output would be empty: pool_size={k} is larger than the padded input. Received: input_shape={list(input_shape)}, padding={p}")
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def _divisor(self, h: int, w: int, out_h: int, out_w: int, dtype) -> np.ndarray:
        """1 / (values averaged) for each output position, (Ho, Wo)."""
        k, s, p = self.params.pool_size, self.params.stride, self.params.padding
        if self.params.count_include_pad or p == 0:
            return np.full((out_h, out_w), 1.0 / (k * k), dtype)

        def covered(size, out):  # real input positions each window covers along one axis
            start = np.arange(out) * s - p
            return np.minimum(start + k, size) - np.maximum(start, 0)

        return (1.0 / np.outer(covered(h, out_h), covered(w, out_w))).astype(dtype)

    def forward(self, weights, x, ctx):
        n, c, h, w = x.shape
        k, s, p = self.params.pool_size, self.params.stride, self.params.padding
        _, out_h, out_w = self.output_shape((c, h, w))
        padded = x
        if p:
            padded = np.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)
            padded[:, :, p : p + h, p : p + w] = x

        def at(a, i, j):  # the (i, j) element of every window, as one strided (N, C, Ho, Wo) view
            return a[:, :, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s]

        # One vectorised pass per window offset (k*k of them), as maxpool2d does.
        offsets = [(i, j) for i in range(k) for j in range(k)]
        y = at(padded, 0, 0).copy()
        for i, j in offsets[1:]:
            y += at(padded, i, j)
        divisor = self._divisor(h, w, out_h, out_w, x.dtype)
        y *= divisor

        def backprop(dy):
            share = dy * divisor  # (N, C, Ho, Wo): what each position of a window receives
            dx = np.zeros((n, c, h + 2 * p, w + 2 * p), dy.dtype)
            for i, j in offsets:
                if s >= k:  # windows don't overlap: each position gets at most one share
                    at(dx, i, j)[...] = share
                else:
                    at(dx, i, j)[...] += share
            return (np.ascontiguousarray(dx[:, :, p : p + h, p : p + w]) if p else dx), {}  # the layer below gets a plain array

        return y, backprop

    # -- export hooks (cnnkit.export): ONNX AveragePool; torch AvgPool2d (floor mode, as here)

    def to_onnx(self, g, x, weights, input_shape):
        k, s, p = self.params.pool_size, self.params.stride, self.params.padding
        return g.node("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, count_include_pad=int(self.params.count_include_pad))

    def to_torch(self, t, weights, input_shape):
        return t.nn.AvgPool2d(self.params.pool_size, self.params.stride, self.params.padding, count_include_pad=self.params.count_include_pad)
