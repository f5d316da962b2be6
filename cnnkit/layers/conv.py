"""2-D convolution (cross-correlation, as in PyTorch and Keras) over NCHW batches, via im2col + GEMM."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided
from pydantic import BeforeValidator, NonNegativeInt, PositiveFloat, PositiveInt

from .base import Layer, LayerParams, init_kernel


def _check_padding(value):
    if value in ("same", "valid") or (type(value) is int and value >= 0):
        return value
    raise ValueError(f"expected 'same', 'valid' or a non-negative integer, received {value!r}")


Padding = Annotated[Literal["same", "valid"] | NonNegativeInt, BeforeValidator(_check_padding)]


def conv_padding(padding: str | int, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Zero padding (before, after) along one axis. "same" follows TensorFlow: out = ceil(size / stride)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return padding, padding


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def im2col(x: np.ndarray, kernel: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    """Patches of an (N, C, H, W) array as a (C*k*k, N*out_h*out_w) matrix, the GEMM-friendly layout."""
    n, c = x.shape[:2]
    sn, sc, sh, sw = x.strides
    view = as_strided(x, (c, kernel, kernel, n, out_h, out_w), (sc, sh, sw, sn, sh * stride, sw * stride), writeable=False)
    return view.reshape(c * kernel * kernel, n * out_h * out_w)


def _pad(x: np.ndarray, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> np.ndarray:
    """Zero-padded copy of an (N, C, H, W) array, laid out in memory as (C, N, H, W) like its im2col."""
    if pad_h == (0, 0) and pad_w == (0, 0):
        return x
    n, c, h, w = x.shape
    padded = np.zeros((c, n, h + sum(pad_h), w + sum(pad_w)), x.dtype)  # cheaper than np.pad per batch
    padded[:, :, pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x.transpose(1, 0, 2, 3)
    return padded.transpose(1, 0, 2, 3)


# The patch matrix is built and consumed in blocks of about this many bytes: small enough to stay in
# a core's L2 cache (2 MiB here) next to the GEMM's other operands, large enough that the Python
# loop over blocks costs little. Measured at batch 256 (seed net conv2 forward): 128 KiB 18 ms,
# 256 KiB 13 ms, 448-640 KiB 11 ms, 768 KiB and up 21-25 ms. (Splitting the blocks over Python
# threads was measured too: slower at every block size on this 2-core machine, so not done.)
# Tests shrink it to exercise the block boundaries.
BLOCK_BYTES = 576 * 1024


def _flat_padded(x: np.ndarray, pad_h: tuple[int, int], pad_w: tuple[int, int], tail: int) -> np.ndarray:
    """(N, C, H, W) -> zero-padded (C, N*Hp*Wp + tail): each channel's padded images end to end.

    In this layout, for stride 1, the patch element at kernel offset (i, j) of every output position
    is the same array shifted by i*Wp + j, so im2col rows are contiguous slices. The zero tail keeps
    the last shifts inside the array.
    """
    n, c, h, w = x.shape
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    flat = np.zeros((c, n * hp * wp + tail), x.dtype)
    flat[:, : n * hp * wp].reshape(c, n, hp, wp)[:, :, pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x.transpose(1, 0, 2, 3)
    return flat


def _patch_blocks(flat: np.ndarray, n: int, image: int, offset: int, window: int, k: int, row: int, ones: bool = False):
    """Yield (start, cols) over the positions [offset, offset + window) of each of the n images
    (``image`` positions apart) of a flat layout: cols is the (C*k*k, length) im2col block of
    ``length`` of them, and ``start`` is where they begin in the compact (n * window) numbering, so
    the block's GEMM writes straight into an array laid out (n, window). Positions outside the window
    (rows of padding that no kept output comes from) are never copied or multiplied.

    A block is several whole windows, or part of one when a window is bigger than a block. One
    buffer is reused: use each block before asking for the next. With ``ones``, cols gets one more
    row of ones, so a GEMM with it also adds the bias (forward) or sums dy into the bias gradient
    (backward) instead of a separate pass over the output.
    """
    c = flat.shape[0]
    rows = c * k * k
    step = max(1, BLOCK_BYTES // ((rows + ones) * flat.itemsize))
    if window <= step:  # whole windows per block
        per = step // window
        pieces = [(m, min(m + per, n), 0, window) for m in range(0, n, per)]
    else:  # each window in near-equal parts
        count = -(-window // step)
        bounds = [window * i // count for i in range(count + 1)]
        pieces = [(m, m + 1, lo, hi) for m in range(n) for lo, hi in zip(bounds[:-1], bounds[1:])]
    longest = max([(m1 - m0) * (hi - lo) for m0, m1, lo, hi in pieces], default=0)
    buffer = np.empty((rows + ones, longest), flat.dtype)
    buffer[rows:] = 1
    s_c, s_pos = flat.strides
    patches = as_strided(flat[:, offset:], (c, k, k, n, window), (s_c, row * s_pos, s_pos, image * s_pos, s_pos), writeable=False)
    views = {}  # (images, span) -> (copy destination, cols): two shapes at most, a full block and the last
    for m0, m1, lo, hi in pieces:
        shape = (m1 - m0, hi - lo)
        if shape not in views:
            length = shape[0] * shape[1]
            views[shape] = buffer[:rows, :length].reshape(c, k, k, *shape), buffer[:, :length]
        destination, cols = views[shape]
        np.copyto(destination, patches[..., m0:m1, lo:hi])
        yield m0 * window + lo, cols


class Conv2D(Layer):
    per_sample_in_training = True

    class Params(LayerParams):
        filters: PositiveInt
        kernel_size: PositiveInt
        stride: PositiveInt = 1
        padding: Padding = "valid"
        use_bias: bool = True
        init_std: PositiveFloat | None = None  # kernel ~ N(0, init_std^2); None: Glorot-uniform

    def _geometry(self, input_shape):
        p = self.params
        _, h, w = input_shape
        pad_h = conv_padding(p.padding, h, p.kernel_size, p.stride)
        pad_w = conv_padding(p.padding, w, p.kernel_size, p.stride)
        out_h = conv_output_size(h, p.kernel_size, p.stride, pad_h)
        out_w = conv_output_size(w, p.kernel_size, p.stride, pad_w)
        return pad_h, pad_w, out_h, out_w

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"conv2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        _, _, out_h, out_w = self._geometry(input_shape)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"output would be empty: kernel_size={self.params.kernel_size} is larger than the padded input. "
                f"Received: input_shape={list(input_shape)}, padding={self.params.padding!r}"
            )
        return (self.params.filters, out_h, out_w)

    def weight_shapes(self, input_shape):
        p = self.params
        shapes = {"kernel": (p.filters, input_shape[0], p.kernel_size, p.kernel_size)}  # (F, C, k, k), as in PyTorch
        if p.use_bias:
            shapes["bias"] = (p.filters,)
        return shapes

    def init_weights(self, input_shape, rng):
        p = self.params
        area = p.kernel_size * p.kernel_size
        shape = self.weight_shapes(input_shape)["kernel"]
        weights = {"kernel": init_kernel(rng, shape, input_shape[0] * area, p.filters * area, p.init_std)}
        if p.use_bias:
            weights["bias"] = np.zeros(p.filters, np.float32)
        return weights

    def forward(self, weights, x, train, input_grad=True):
        if self.params.stride == 1:
            return self._forward_stride1(weights, x, input_grad)
        return self._forward_strided(weights, x, input_grad)

    def _forward_stride1(self, weights, x, input_grad):
        """Stride 1, the common case, on the flat padded layout (see ``_flat_padded``).

        Output rows are computed at full padded width (about 15% wasted work at 28x28, k=5) and
        cropped, because then every patch row is a contiguous shifted slice: the im2col copy streams
        instead of gathering short runs. Padded rows with no output are skipped. The patch matrix is
        built and multiplied one cache-sized block of positions at a time, so it never makes a round
        trip through RAM.
        """
        p = self.params
        n, c, h, w = x.shape
        k = p.kernel_size
        kernel = weights["kernel"]
        f = kernel.shape[0]
        pad_h, pad_w, out_h, out_w = self._geometry((c, h, w))
        hp, wp = h + sum(pad_h), w + sum(pad_w)
        image, reach = hp * wp, (k - 1) * wp + (k - 1)  # reach: offset of a patch's last element
        x_flat = _flat_padded(x, pad_h, pad_w, tail=reach)
        wmat = kernel.reshape(f, c * k * k)
        if p.use_bias:  # the bias as one more kernel column, against the ones row of the patches
            wmat = np.concatenate([wmat, weights["bias"][:, None]], axis=1)
        y_rows = np.empty((f, n * out_h * wp), x.dtype)  # output rows at padded width, (F, N, Ho, Wp)
        for start, cols in _patch_blocks(x_flat, n, image, 0, out_h * wp, k, wp, ones=p.use_bias):
            np.matmul(wmat, cols, out=y_rows[:, start : start + cols.shape[1]])
        y = y_rows.reshape(f, n, out_h, wp)[..., :out_w].transpose(1, 0, 2, 3)  # (N, F, Ho, Wo) view

        def backprop(dy):
            if not input_grad:
                # dy at padded width, zeros in the cropped columns: the layout of y_rows.
                dy_rows = np.zeros((f, n, out_h, wp), dy.dtype)
                dy_rows[..., :out_w] = dy.transpose(1, 0, 2, 3)
                dy_rows = dy_rows.reshape(f, -1)
                dkernel = np.zeros((c * k * k + int(p.use_bias), f), dy.dtype)  # the ones row's gradient is the bias's
                part = np.empty_like(dkernel)
                for start, cols in _patch_blocks(x_flat, n, image, 0, out_h * wp, k, wp, ones=p.use_bias):
                    # cols @ dy.T, not dy @ cols.T: numpy hands the latter to a much slower path.
                    np.matmul(cols, dy_rows[:, start : start + cols.shape[1]].T, out=part)
                    dkernel += part
                grads = {"kernel": np.ascontiguousarray(dkernel[: c * k * k].T).reshape(kernel.shape)}
                if p.use_bias:
                    grads["bias"] = dkernel[-1].copy()
                return None, grads
            # The input gradient is the full convolution of dy with the flipped kernel: the same
            # blocked im2col + GEMM, read from dy_flat (patch row (f, a, b) is dy shifted back by
            # (k-1-a, k-1-b), hence the flip), for the rows of x only. Those dy patches, still in
            # cache, also give the kernel gradient against the input rows (the skipped padding rows
            # are zeros): one patch copy per block serves both products.
            # dy_flat: dy on the padded positions (zeros where the forward output was cropped),
            # after `reach` leading zeros so that the patches never index before 0.
            dy_flat = np.zeros((f, reach + n * image), dy.dtype)
            dy_flat[:, reach:].reshape(f, n, hp, wp)[:, :, :out_h, :out_w] = dy.transpose(1, 0, 2, 3)
            x_rows = x_flat[:, : n * image].reshape(c, n, hp, wp)[:, :, pad_h[0] : pad_h[0] + h].reshape(c, -1)  # (C, N*H*Wp) copy
            flipped = kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, f * k * k)
            dx_rows = np.empty((c, n * h * wp), dy.dtype)
            dflipped = np.zeros((f * k * k, c), dy.dtype)
            part = np.empty_like(dflipped)
            for start, cols in _patch_blocks(dy_flat, n, image, pad_h[0] * wp, h * wp, k, wp):
                length = cols.shape[1]
                np.matmul(flipped, cols, out=dx_rows[:, start : start + length])
                np.matmul(cols, x_rows[:, start : start + length].T, out=part)
                dflipped += part
            dkernel = dflipped.reshape(f, k, k, c)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
            grads = {"kernel": np.ascontiguousarray(dkernel)}
            if p.use_bias:
                grads["bias"] = dy.sum(axis=(0, 2, 3))
            dx = dx_rows.reshape(c, n, h, wp)[..., pad_w[0] : pad_w[0] + w]
            return dx.transpose(1, 0, 2, 3), grads

        return y, backprop

    def _forward_strided(self, weights, x, input_grad):
        """Any stride: one im2col of the whole batch through stride tricks, then one GEMM."""
        p = self.params
        n, c, h, w = x.shape
        k, s = p.kernel_size, p.stride
        kernel = weights["kernel"]
        f = kernel.shape[0]
        pad_h, pad_w, out_h, out_w = self._geometry((c, h, w))
        cols = im2col(_pad(x, pad_h, pad_w), k, s, out_h, out_w)  # (C*k*k, N*Ho*Wo)
        y = kernel.reshape(f, -1) @ cols  # (F, N*Ho*Wo)
        if p.use_bias:
            y += weights["bias"][:, None]
        y = y.reshape(f, n, out_h, out_w).transpose(1, 0, 2, 3)  # (N, F, Ho, Wo)

        def backprop(dy):
            dy_mat = dy.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*Ho*Wo)
            # (cols @ dy.T).T, not dy @ cols.T: numpy hands the latter to a slow path (40x here).
            grads = {"kernel": (cols @ dy_mat.T).T.reshape(kernel.shape)}
            if p.use_bias:
                grads["bias"] = dy_mat.sum(axis=1)
            if not input_grad:
                return None, grads
            # The input gradient is a full convolution of the stride-dilated dy with the flipped
            # kernel, computed as one more im2col + GEMM instead of a k*k loop of col2im adds.
            hp, wp = h + sum(pad_h), w + sum(pad_w)
            dilated = np.zeros((n, f, hp + k - 1, wp + k - 1), dy.dtype)
            dilated[:, :, k - 1 : k - 1 + (out_h - 1) * s + 1 : s, k - 1 : k - 1 + (out_w - 1) * s + 1 : s] = dy
            flipped = kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1)  # (C, F*k*k)
            dx = (flipped @ im2col(dilated, k, 1, hp, wp)).reshape(c, n, hp, wp).transpose(1, 0, 2, 3)
            return dx[:, :, pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w], grads

        return y, backprop
