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


# Stride-1 convolution works one block of images at a time, sized so that its working set (the
# copied input rows and the partial outputs) is about this many bytes and stays in a core's L2
# cache (2 MiB here), with few enough blocks that the per-block Python work (which holds the GIL
# while the other thread waits for it) stays small. Measured on the seed net, 2 threads, inference
# at batch 256: 512 KiB 29.3k img/s, 768 KiB to 2 MiB 31-32k. Tests shrink it to exercise the block
# boundaries.
BLOCK_BYTES = 1024 * 1024


def _flat_padded(x: np.ndarray, pad_h: tuple[int, int], pad_w: tuple[int, int], lead: int = 0, tail: int = 0) -> np.ndarray:
    """(N, C, H, W) -> 1-D: ``lead`` zeros, each image's channels zero-padded to (Hp, Wp) in NCHW
    order, then ``tail`` zeros.

    In this layout, for stride 1, the input under kernel offset (i, j) of every output position is
    the same array shifted by i*Wp + j, so the rows of an im2col are contiguous slices.
    """
    n, c, h, w = x.shape
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    flat = np.zeros(lead + n * c * hp * wp + tail, x.dtype)
    flat[lead : lead + n * c * hp * wp].reshape(n, c, hp, wp)[:, :, pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x
    return flat


def _copies_kernel_rows(c: int, k: int, f: int) -> bool:
    """How the blocks below get their im2col rows, from C input channels for F output rows.

    A full im2col copies C*k*k rows per position for one product. Copying only the C*k rows of one
    kernel row (the input shifted by j) and taking the k kernel rows as views shifted by i*Wp
    instead costs C*k copied rows plus k*F partial-output rows written and summed, for k products.
    Whichever moves fewer rows wins: C*k*k vs C*k + 2*k*F, i.e. C*(k-1) vs 2*F. (Seed net: conv1,
    C=1, copies the full im2col; conv2, C=6, F=6, shares the shifted rows: 30% faster measured.)
    """
    return c * (k - 1) <= 2 * f


def _im2col_blocks(flat: np.ndarray, n: int, c: int, plane: int, start: int, window: int, k: int, row: int, out_rows: int, ones: bool = False):
    """Yield (m0, m1, lo, hi, cols) over blocks of images [m0, m1) and positions [lo, hi) of the
    window [start, start + window) of each of their C planes (``plane`` positions each) in ``flat``.

    ``cols`` is a (images, G, R, hi - lo) view: the im2col of the block's positions, rows ordered
    (kernel row i, channel c, kernel column j), in G groups of R rows. Either the whole im2col is
    copied (G = 1, R = k*C*k), or only the C*k rows of kernel row 0 (the input shifted by j), and
    group i is that copy shifted by i*row: G = k, R = C*k (see ``_copies_kernel_rows``). With
    ``ones`` each group has one more row, of ones, so a product with it also adds a bias column.

    A block holds whole windows of several images when they fit in BLOCK_BYTES (``out_rows``: rows
    of each partial output the caller keeps per position), else part of one image's window. The
    first block is the largest. One buffer is reused: use each block before asking for the next.
    """
    shared = not _copies_kernel_rows(c, k, out_rows)
    groups, rows = (k, c * k) if shared else (1, k * c * k)
    reach = (k - 1) * row if shared else 0  # extra positions copied so the shifted views stay inside
    itemsize = flat.itemsize
    per_image = ((rows + ones) * (window + reach) + groups * out_rows * window) * itemsize
    if per_image <= BLOCK_BYTES:  # whole windows, several images per block
        per = BLOCK_BYTES // per_image
        pieces = [(m, min(m + per, n), 0, window) for m in range(0, n, per)]
    else:  # each image's window in near-equal parts, the longer ones first
        count = -(-per_image // BLOCK_BYTES)
        bounds = [-(-window * i // count) for i in range(count + 1)]
        pieces = [(m, m + 1, lo, hi) for m in range(n) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    if not pieces:
        return
    images, longest = max(m1 - m0 for m0, m1, _, _ in pieces), max(hi - lo for _, _, lo, hi in pieces)
    buffer = np.empty((images, rows + ones, longest + reach), flat.dtype)
    buffer[:, rows:] = 1
    s = flat.strides[0]
    if shared:  # source[m, c, j, q] = flat[start + m*C*plane + c*plane + j + q]
        source = as_strided(flat[start:], (n, c, k, window + reach), (c * plane * s, plane * s, s, s), writeable=False)
    else:  # source[m, i, c, j, q] = flat[start + m*C*plane + c*plane + i*row + j + q]
        source = as_strided(flat[start:], (n, k, c, k, window), (c * plane * s, row * s, plane * s, s, s), writeable=False)
    s_img, s_row = buffer.strides[:2]
    # as_strided is slow Python code: build the largest block's view once and slice it per block.
    cols = as_strided(buffer, (images, groups, rows + ones, longest), (s_img, row * s, s_row, s), writeable=False)
    destination = buffer[:, :rows].reshape(images, *source.shape[1:-1], longest + reach)
    for m0, m1, lo, hi in pieces:
        g, span = m1 - m0, hi - lo
        np.copyto(destination[:g, ..., : span + reach], source[m0:m1, ..., lo : hi + reach])
        yield m0, m1, lo, hi, cols[:g, :, :, :span]


def _grouped(weights: np.ndarray, groups: int, ones: bool = False) -> np.ndarray:
    """(k, F, C*k [+ 1]) weights per kernel row (the last column against the ones row, if ``ones``)
    -> the (G, F, R) matrices against ``_im2col_blocks``' groups."""
    k, f, width = weights.shape
    if groups == k:
        return weights
    whole = weights[:, :, : width - ones].transpose(1, 0, 2).reshape(f, k * (width - ones))
    if ones:
        whole = np.concatenate([whole, weights[0, :, -1:]], axis=1)
    return whole[None]


def _multiply(weights: np.ndarray, cols: np.ndarray, out: np.ndarray, scratch: list) -> None:
    """out (G', F, span) = sum over groups of weights (G, F, R) @ cols (G', G, R, span); ``out`` may
    be a strided view. The sum over k groups is one product with a row of ones (one call, no
    temporaries) when ``out`` is contiguous."""
    images, groups, _, span = cols.shape
    if groups == 1:
        np.matmul(weights[0], cols[:, 0], out=out)
        return
    if not scratch:  # the first block is the largest
        scratch.append(np.empty((images, groups, weights.shape[1], span), cols.dtype))
    products = scratch[0][:images, :, :, :span]
    np.matmul(weights, cols, out=products)
    if out.flags.c_contiguous:
        f = weights.shape[1]
        np.matmul(np.ones((1, groups), cols.dtype), products.reshape(images, groups, f * span), out=out.reshape(images, 1, f * span))
    else:
        np.add.reduce(products, axis=1, out=out)


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
        """Stride 1, the common case, on the flat padded layout (see ``_flat_padded``), a block of
        images at a time (see ``_im2col_blocks``).

        Output rows are computed at full padded width (about 15% wasted work at 28x28, k=5) and
        cropped, because then every im2col row is one contiguous slice of the input; padded rows
        with no output are skipped. Arrays stay NCHW throughout, so nothing is transposed.
        """
        p = self.params
        n, c, h, w = x.shape
        k = p.kernel_size
        kernel = weights["kernel"]
        x = x.astype(np.result_type(x.dtype, kernel.dtype), copy=False)  # integer pixels compute in the kernel's float type
        f = kernel.shape[0]
        pad_h, pad_w, out_h, out_w = self._geometry((c, h, w))
        hp, wp = h + sum(pad_h), w + sum(pad_w)
        plane, reach = hp * wp, (k - 1) * wp + (k - 1)  # reach: offset of a patch's last element
        x_flat = _flat_padded(x, pad_h, pad_w, tail=k - 1)  # the last window's shifts reach k-1 past the end
        # Kernel row i as (F, C*k) against the input rows (c, j); the bias rides on row 0's ones column.
        w_rows = np.zeros((k, f, c * k + p.use_bias), x.dtype)
        w_rows[:, :, : c * k] = kernel.transpose(2, 0, 1, 3).reshape(k, f, c * k)
        if p.use_bias:
            w_rows[0, :, -1] = weights["bias"]
        window = out_h * wp
        y_rows = np.empty((n, f, window), x.dtype)  # output rows at padded width
        w_groups = _grouped(w_rows, 1 if _copies_kernel_rows(c, k, f) else k, p.use_bias)
        scratch = []
        for m0, m1, lo, hi, cols in _im2col_blocks(x_flat, n, c, plane, 0, window, k, wp, f, ones=p.use_bias):
            _multiply(w_groups, cols, y_rows[m0:m1, :, lo:hi], scratch)
        y = y_rows.reshape(n, f, out_h, wp)[..., :out_w]  # (N, F, Ho, Wo) view

        def backprop(dy):
            grads = {}
            if p.use_bias:
                grads["bias"] = dy.sum(axis=(0, 2, 3))
            if not input_grad:
                # kernel[f, c, i, j] gradient = sum_q dy[f, q] x[c, q + i*wp + j]: the same im2col
                # rows against dy at padded width (zeros in the cropped columns).
                dy_rows = np.zeros((n, f, out_h, wp), dy.dtype)
                dy_rows[..., :out_w] = dy
                dy_rows = dy_rows.reshape(n, f, window)
                dkernel = np.zeros((k * c * k, f), dy.dtype)  # rows (i, c, j)
                for m0, m1, lo, hi, cols in _im2col_blocks(x_flat, n, c, plane, 0, window, k, wp, f):
                    # cols @ dy.T, not dy @ cols.T: numpy hands the latter to a much slower path.
                    products = np.matmul(cols, dy_rows[m0:m1, None, :, lo:hi].transpose(0, 1, 3, 2))  # (images, G, R, F)
                    dkernel += products.sum(axis=0).reshape(k * c * k, f)
                grads["kernel"] = np.ascontiguousarray(dkernel.reshape(k, c, k, f).transpose(3, 1, 0, 2))
                return None, grads
            # The input gradient is the full convolution of dy with the flipped kernel: the same
            # blocked computation over dy on the padded positions (dy_flat; shifted by a*wp + b it is
            # dy shifted back by (k-1-a, k-1-b), hence the flip), for the rows of x only. The same
            # dy rows, still in cache, also give the kernel gradient against those rows of the
            # padded input (the skipped padding rows are zeros): one copy serves both products.
            # `reach` leading zeros keep the first image's shifts inside the array.
            dy_flat = np.zeros(reach + n * f * plane, dy.dtype)
            dy_flat[reach : reach + n * f * plane].reshape(n, f, hp, wp)[:, :, :out_h, :out_w] = dy
            flip_rows = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(2, 1, 0, 3)).reshape(k, c, f * k)  # [a, c, (f, b)]
            flip_groups = _grouped(flip_rows, 1 if _copies_kernel_rows(f, k, c) else k)
            x_window = h * wp  # the rows of x, at padded width
            x_rows = x_flat[: n * c * plane].reshape(n, c, hp, wp)[:, :, pad_h[0] : pad_h[0] + h].reshape(n, c, x_window)  # a view
            dx_rows = np.empty((n, c, x_window), dy.dtype)
            dflipped = np.zeros((k * f * k, c), dy.dtype)  # rows (a, f, b): gradient of flipped[f, c, a, b]
            scratch = []
            for m0, m1, lo, hi, cols in _im2col_blocks(dy_flat, n, f, plane, pad_h[0] * wp, x_window, k, wp, c):
                _multiply(flip_groups, cols, dx_rows[m0:m1, :, lo:hi], scratch)
                products = np.matmul(cols, x_rows[m0:m1, None, :, lo:hi].transpose(0, 1, 3, 2))  # (images, G, R, C)
                dflipped += products.sum(axis=0).reshape(k * f * k, c)
            dflipped = dflipped.reshape(k, f, k, c).transpose(1, 3, 0, 2)  # (F, C, a, b)
            grads["kernel"] = np.ascontiguousarray(dflipped[:, :, ::-1, ::-1])
            dx = dx_rows.reshape(n, c, h, wp)[..., pad_w[0] : pad_w[0] + w]
            return dx, grads

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
