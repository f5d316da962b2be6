"""2-D max pooling over NCHW batches (no padding, floor mode, as in PyTorch's defaults)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided
from pydantic import PositiveInt

from .base import Layer, LayerParams


class MaxPool2D(Layer):
    class Params(LayerParams):
        pool_size: PositiveInt = 2
        stride: PositiveInt | None = None  # None: same as pool_size (non-overlapping windows)

    @property
    def _stride(self) -> int:
        return self.params.stride or self.params.pool_size

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"maxpool2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        c, h, w = input_shape
        k, s = self.params.pool_size, self._stride
        out_h, out_w = (h - k) // s + 1, (w - k) // s + 1
        if h < k or w < k:
            raise ValueError(f"output would be empty: pool_size={k} is larger than the input. Received: input_shape={list(input_shape)}")
        return (c, out_h, out_w)

    def forward(self, weights, x, train):
        n, c, h, w = x.shape
        k, s = self.params.pool_size, self._stride
        _, out_h, out_w = self.output_shape((c, h, w))
        sn, sc, sh, sw = x.strides
        windows = as_strided(x, (n, c, out_h, out_w, k, k), (sn, sc, sh * s, sw * s, sh, sw), writeable=False)
        flat = windows.reshape(n, c, out_h, out_w, k * k)
        argmax = flat.argmax(axis=-1)  # the first maximum wins, as in PyTorch
        y = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]

        def backprop(dy):
            # Route each output gradient to the one input position that produced the maximum.
            hits = (argmax[..., None] == np.arange(k * k)) * dy[..., None]  # (N, C, Ho, Wo, k*k)
            hits = hits.reshape(n, c, out_h, out_w, k, k)
            dx = np.zeros_like(x)
            if s == k:
                tiled = hits.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, out_h * k, out_w * k)
                dx[:, :, : out_h * k, : out_w * k] = tiled
            else:  # overlapping or gapped windows: accumulate one window offset at a time
                for i in range(k):
                    for j in range(k):
                        dx[:, :, i : i + s * out_h : s, j : j + s * out_w : s] += hits[..., i, j]
            return dx, {}

        return y, backprop
