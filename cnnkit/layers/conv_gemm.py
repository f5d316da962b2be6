"""Stride-1 convolution for small images: the images of a block side by side, 4 per product.

``conv_blocks`` multiplies image by image: a product per image of (F, C*k*k) weights against that
image's (C*k*k, positions) patches. For a 7x7 image with 64 channels that is a 63-column product
(7 rows at padded width 9), too narrow for BLAS to run at speed. Here a block's patches are laid
out (C*k*k, images * positions) and multiplied 4 images (one CHUNK) per product, and the output is
copied back to NCHW. Measured on the best spec's 64->128 convolution at 7x7, 64 images, one
thread: forward 8.6 ms image by image, 7.1-7.4 ms here; the whole net trains 7-11% faster.

Results must not depend on the block size (it comes from the machine's L2, ``tuning``), and BLAS
results can depend on a product's shape (measured: OpenBLAS gave outputs differing in the last bit
for the same columns in a 4-image and a 13-image product). So every product covers one CHUNK of
images (CHUNK-aligned, as the thread split's ranges are), always of the same shape; a block makes
them in one stacked call. The kernel gradient, a sum over positions, is summed per chunk that way
and then chunk by chunk in order (``conv_blocks.ChunkSums``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import conv_blocks as blocks

# Windows (output rows at padded width) up to this many positions take this path; wider ones are
# wide enough per image (28x28 layers, 840 positions, stay image by image; the bound is not tuned).
MAX_WINDOW = 512


def uses_batched(c: int, k: int, f: int, window: int) -> bool:
    """Whether a stride-1 convolution of this shape takes this path: a narrow window, and a full
    im2col the cheaper copy, C*(k-1) <= 2*F (``conv_blocks.copies_kernel_rows``)."""
    return window <= MAX_WINDOW and blocks.copies_kernel_rows(c, k, f)


def _patches(flat: np.ndarray, n: int, c: int, plane: int, start: int, window: int, k: int, row: int) -> np.ndarray:
    """source[c, i, j, m, q] = flat[start + m*C*plane + c*plane + i*row + j + q]: an im2col view
    whose rows (c, i, j) are contiguous slices of each image's padded planes."""
    s = flat.strides[0]
    return as_strided(flat[start:], (c, k, k, n, window), (plane * s, row * s, s, c * plane * s, s), writeable=False)


def _multiply(w: np.ndarray, cols: np.ndarray, out: np.ndarray, row: int, left: int, bias: np.ndarray | None = None) -> None:
    """out (images, X, H, W) = w (X, R) @ cols (R, images * H*row) [+ bias], cropped: each output
    row is ``row`` wide in ``cols`` and starts ``left`` in. One product per CHUNK of images (the
    last may be partial), so each product's shape is fixed whatever the block.

    The output is written contiguous (the crop rides on the copy out of the product, which is
    needed anyway): the next layers run about twice as fast on it as on a cropped view."""
    chunk = blocks.CHUNK
    images, rows, h, width = out.shape
    whole, span = images // chunk, chunk * h * row
    parts = []
    if whole:
        products = np.matmul(w, cols[:, : whole * span].reshape(cols.shape[0], whole, span).transpose(1, 0, 2))
        products = products.reshape(whole, rows, chunk, h, row).transpose(0, 2, 1, 3, 4)
        parts.append((out[: whole * chunk].reshape(whole, chunk, rows, h, width), products))
    if whole * chunk < images:
        rest = images - whole * chunk
        parts.append((out[whole * chunk :], (w @ cols[:, whole * span :]).reshape(rows, rest, h, row).transpose(1, 0, 2, 3)))
    for destination, product in parts:
        product = product[..., left : left + width]
        if bias is None:
            destination[...] = product
        else:
            np.add(product, bias[:, None, None], out=destination)


def _chunk_products(cols: np.ndarray, other: np.ndarray, m0: int, m1: int, window: int, sums: blocks.ChunkSums) -> None:
    """Store, per CHUNK of the block's images [m0, m1), cols (R, images*window) @ other.T, with
    ``other`` (X, images*window): sum over the chunk's positions of patches times ``other``."""
    chunk = blocks.CHUNK
    whole = (m1 - m0) // chunk
    rows, width = cols.shape[0], chunk * window
    if whole:
        a = cols[:, : whole * width].reshape(rows, whole, width).transpose(1, 0, 2)
        b = other[:, : whole * width].reshape(other.shape[0], whole, width).transpose(1, 2, 0)
        for j, product in enumerate(np.matmul(a, b)):
            sums.put(m0 + j * chunk, product)
    if m0 + whole * chunk < m1:  # the range's last, partial chunk
        sums.put(m0 + whole * chunk, cols[:, whole * width :] @ other[:, whole * width :].T)


def forward(kernel: np.ndarray, bias: np.ndarray | None, x: np.ndarray, pad_h, pad_w, out_h: int, out_w: int, input_grad: bool):
    """y, backprop for a stride-1 convolution of x (N, C, H, W) with kernel (F, C, k, k)."""
    n, c, h, w = x.shape
    f, _, k, _ = kernel.shape
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    plane, reach = hp * wp, (k - 1) * wp + (k - 1)
    window = out_h * wp
    x_flat = blocks.flat_padded(x, pad_h, pad_w, tail=k - 1)  # the last window's shifts reach k-1 past the end
    patches = _patches(x_flat, n, c, plane, 0, window, k, wp)
    w_mat = kernel.reshape(f, c * k * k)
    ranges = blocks.image_ranges(n, window * f * c * k * k)
    y = np.empty((n, f, out_h, out_w), x.dtype)
    per_image = (c * k * k + f) * window * x.itemsize

    def forward_images(a, b):
        for m0, m1 in blocks.chunk_blocks(a, b, per_image):
            cols = np.empty((c, k, k, m1 - m0, window), x.dtype)
            np.copyto(cols, patches[:, :, :, m0:m1])
            _multiply(w_mat, cols.reshape(c * k * k, -1), y[m0:m1], wp, 0, bias)

    blocks.run_ranges(forward_images, ranges)

    def backprop(dy):
        grads = {}
        if bias is not None:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        if not input_grad:
            dy_rows = np.zeros((f, n, out_h, wp), dy.dtype)  # dy at padded width, channels first
            dy_rows[..., :out_w] = dy.transpose(1, 0, 2, 3)
            dy_rows = dy_rows.reshape(f, n * window)

            def kernel_grad_images(a, b):
                sums = blocks.ChunkSums(a, b, (c * k * k, f), dy.dtype)
                for m0, m1 in blocks.chunk_blocks(a, b, per_image):
                    cols = np.empty((c, k, k, m1 - m0, window), x.dtype)
                    np.copyto(cols, patches[:, :, :, m0:m1])
                    _chunk_products(cols.reshape(c * k * k, -1), dy_rows[:, m0 * window : m1 * window], m0, m1, window, sums)
                return sums

            dkernel = blocks.total(blocks.run_ranges(kernel_grad_images, ranges))  # rows (c, i, j)
            grads["kernel"] = np.ascontiguousarray(dkernel.T.reshape(kernel.shape))
            return None, grads
        # The input gradient is the full convolution of dy with the flipped kernel: patches of dy on
        # the padded positions (``reach`` leading zeros keep the first image's shifts inside the
        # array), for the rows of x only. The same patches against those rows of x give the kernel
        # gradient (of the flipped kernel).
        dy_flat = np.zeros(reach + n * f * plane, dy.dtype)
        dy_flat[reach : reach + n * f * plane].reshape(n, f, hp, wp)[:, :, :out_h, :out_w] = dy
        x_window = h * wp
        dy_patches = _patches(dy_flat, n, f, plane, pad_h[0] * wp, x_window, k, wp)  # rows (f, a, b)
        flipped = kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, f * k * k)  # [c, (f, a, b)]
        x_rows = x_flat[: n * c * plane].reshape(n, c, hp, wp)[:, :, pad_h[0] : pad_h[0] + h].reshape(n, c, x_window)
        dx = np.empty((n, c, h, w), dy.dtype)
        per_image_back = (f * k * k + 2 * c) * x_window * dy.itemsize

        def input_grad_images(a, b):
            sums = blocks.ChunkSums(a, b, (f * k * k, c), dy.dtype)
            for m0, m1 in blocks.chunk_blocks(a, b, per_image_back):
                cols = np.empty((f, k, k, m1 - m0, x_window), dy.dtype)
                np.copyto(cols, dy_patches[:, :, :, m0:m1])
                cols = cols.reshape(f * k * k, -1)
                _multiply(flipped, cols, dx[m0:m1], wp, pad_w[0])
                x_block = np.ascontiguousarray(x_rows[m0:m1].transpose(1, 0, 2)).reshape(c, -1)
                _chunk_products(cols, x_block, m0, m1, x_window, sums)
            return sums

        dflipped = blocks.total(blocks.run_ranges(input_grad_images, ranges))  # rows (f, a, b)
        grads["kernel"] = np.ascontiguousarray(dflipped.reshape(f, k, k, c).transpose(0, 3, 1, 2)[:, :, ::-1, ::-1])
        return dx, grads

    return y, backprop
