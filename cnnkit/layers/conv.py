"""2-D convolution (cross-correlation, as in PyTorch and Keras) over NCHW batches, via im2col + GEMM."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided
from pydantic import BeforeValidator, NonNegativeInt, PositiveFloat, PositiveInt

from . import conv_blocks as blocks
from . import conv_gemm
from .kernels import winograd, winograd_pool
from .base import Layer, LayerParams, Weight, kernel_init


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


class Conv2D(Layer):
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

    def weights(self, input_shape):
        p = self.params
        area = p.kernel_size * p.kernel_size
        # (F, C, k, k), as in PyTorch
        kernel = Weight((p.filters, input_shape[0], p.kernel_size, p.kernel_size), kernel_init(input_shape[0] * area, p.filters * area, p.init_std))
        return {"kernel": kernel, "bias": Weight((p.filters,))} if p.use_bias else {"kernel": kernel}

    def forward(self, weights, x, ctx):
        p = self.params
        if p.stride == 1 and winograd.suits(x.shape[1], p.kernel_size, p.filters) and (not ctx.train or self._winograd_pays(x)):
            return self._forward_winograd(weights, x, ctx)
        if p.stride == 1:
            return self._forward_stride1(weights, x, ctx.input_grad)
        return self._forward_strided(weights, x, ctx.input_grad)

    def _winograd_pays(self, x) -> bool:
        """In training, whether the batch is big enough for Winograd (``winograd.pays_in_training``)."""
        _, _, out_h, out_w = self._geometry(x.shape[1:])
        return winograd.pays_in_training(x.shape[0], out_h, out_w)

    def fuses_relu_pool(self, input_shape) -> bool:
        """Whether inference may run this convolution -> relu -> maxpool2d(2, stride 2) as one step
        (``forward_relu_pool``): the Winograd path's tiles are the pooling windows."""
        p = self.params
        return p.stride == 1 and winograd.suits(input_shape[0], p.kernel_size, p.filters)

    def forward_relu_pool(self, weights, x) -> np.ndarray:
        """Inference of this convolution -> relu -> maxpool2d(2, stride 2), where ``fuses_relu_pool``,
        pooled inside a Winograd kernel (``kernels.winograd_pool``): F(2x2, 3x3) gives the three
        layers' values bit for bit, F(4x4, 3x3) (where it needs fewer multiply-adds) to rounding."""
        kernel = weights["kernel"]
        x = x.astype(np.result_type(x.dtype, kernel.dtype), copy=False)
        pad_h, pad_w, out_h, out_w = self._geometry(x.shape[1:])
        bias = weights["bias"] if self.params.use_bias else None
        return winograd_pool.relu_pool(kernel, bias, x, pad_h, pad_w, out_h, out_w)

    def _forward_winograd(self, weights, x, ctx):
        """3x3, stride 1, enough channels: Winograd F(2x2, 3x3) (``kernels.winograd``)."""
        kernel = weights["kernel"]
        x = x.astype(np.result_type(x.dtype, kernel.dtype), copy=False)
        pad_h, pad_w, out_h, out_w = self._geometry(x.shape[1:])
        bias = weights["bias"] if self.params.use_bias else None
        return winograd.forward(kernel, bias, x, pad_h, pad_w, out_h, out_w, ctx.train, ctx.input_grad)

    def _forward_stride1(self, weights, x, input_grad):
        """Stride 1, the common case, on the flat padded layout (see ``blocks.flat_padded``), a block of
        images at a time (see ``blocks.im2col_blocks``).

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
        if conv_gemm.uses_batched(c, k, f, out_h * wp):  # small images: side by side, 4 per product
            return conv_gemm.forward(kernel, weights["bias"] if p.use_bias else None, x, pad_h, pad_w, out_h, out_w, input_grad)
        plane, reach = hp * wp, (k - 1) * wp + (k - 1)  # reach: offset of a patch's last element
        x_flat = blocks.flat_padded(x, pad_h, pad_w, tail=k - 1)  # the last window's shifts reach k-1 past the end
        # Kernel row i as (F, C*k) against the input rows (c, j); the bias rides on row 0's ones column.
        w_rows = np.zeros((k, f, c * k + p.use_bias), x.dtype)
        w_rows[:, :, : c * k] = kernel.transpose(2, 0, 1, 3).reshape(k, f, c * k)
        if p.use_bias:
            w_rows[0, :, -1] = weights["bias"]
        window = out_h * wp
        y_rows = np.empty((n, f, window), x.dtype)  # output rows at padded width
        shared = not blocks.copies_kernel_rows(c, k, f)  # for the kernel gradient of a first layer too
        w_groups = blocks.grouped(w_rows, shared, p.use_bias)
        # Images [a, b) of a batch too small for the model to split run on threads of their own.
        ranges = blocks.image_ranges(n, window * f * c * k * k)

        def forward_images(a, b):
            scratch = []
            for m0, m1, lo, hi, cols in blocks.im2col_blocks(x_flat[a * c * plane :], b - a, c, plane, 0, window, k, wp, f, shared, ones=p.use_bias):
                blocks.multiply(w_groups, cols, y_rows[a + m0 : a + m1, :, lo:hi], scratch)

        blocks.run_ranges(forward_images, ranges)
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

                def kernel_grad_images(a, b):
                    sums = blocks.ChunkSums(a, b, (k * c * k, f), dy.dtype)  # rows (i, c, j)
                    for m0, m1, lo, hi, cols in blocks.im2col_blocks(x_flat[a * c * plane :], b - a, c, plane, 0, window, k, wp, f, shared):
                        # cols @ dy.T, not dy @ cols.T: numpy hands the latter to a much slower path.
                        sums.add(a + m0, np.matmul(cols, dy_rows[a + m0 : a + m1, None, :, lo:hi].transpose(0, 1, 3, 2)))  # (images, G, R, F)
                    return sums

                dkernel = blocks.total(blocks.run_ranges(kernel_grad_images, ranges))
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
            dy_shared = not blocks.copies_kernel_rows(f, k, c)
            flip_groups = blocks.grouped(flip_rows, dy_shared)
            x_window = h * wp  # the rows of x, at padded width
            x_rows = x_flat[: n * c * plane].reshape(n, c, hp, wp)[:, :, pad_h[0] : pad_h[0] + h].reshape(n, c, x_window)  # a view
            dx_rows = np.empty((n, c, x_window), dy.dtype)

            def input_grad_images(a, b):
                sums = blocks.ChunkSums(a, b, (k * f * k, c), dy.dtype)  # rows (a, f, b): gradient of flipped[f, c, a, b]
                scratch = []
                for m0, m1, lo, hi, cols in blocks.im2col_blocks(dy_flat[a * f * plane :], b - a, f, plane, pad_h[0] * wp, x_window, k, wp, c, dy_shared):
                    blocks.multiply(flip_groups, cols, dx_rows[a + m0 : a + m1, :, lo:hi], scratch)
                    sums.add(a + m0, np.matmul(cols, x_rows[a + m0 : a + m1, None, :, lo:hi].transpose(0, 1, 3, 2)))  # (images, G, R, C)
                return sums

            dflipped = blocks.total(blocks.run_ranges(input_grad_images, ranges))
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

    # -- export hooks (cnnkit.export): ONNX Conv; torch Conv2d, behind ZeroPad2d when "same" pads unevenly

    def to_onnx(self, g, x, weights, input_shape):
        p = self.params
        pad_h, pad_w, _, _ = self._geometry(input_shape)
        inputs = [x, g.constant(weights["kernel"], "kernel")] + ([g.constant(weights["bias"], "bias")] if p.use_bias else [])
        return g.node("Conv", inputs, kernel_shape=[p.kernel_size] * 2, strides=[p.stride] * 2, pads=[pad_h[0], pad_w[0], pad_h[1], pad_w[1]])

    def to_torch(self, t, weights, input_shape):
        p = self.params
        pad_h, pad_w, _, _ = self._geometry(input_shape)
        even = pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]
        conv = t.nn.Conv2d(input_shape[0], p.filters, p.kernel_size, p.stride, padding=(pad_h[0], pad_w[0]) if even else 0, bias=p.use_bias)
        t.set(conv.weight, weights["kernel"])  # (F, C, k, k) in both
        if p.use_bias:
            t.set(conv.bias, weights["bias"])
        if even:
            return conv
        return t.sequential(pad=t.nn.ZeroPad2d((pad_w[0], pad_w[1], pad_h[0], pad_h[1])), conv=conv)

    def from_torch(self, t, module, input_shape):
        conv = getattr(module, "conv", module)
        return {"kernel": t.array(conv.weight)} | ({"bias": t.array(conv.bias)} if self.params.use_bias else {})
