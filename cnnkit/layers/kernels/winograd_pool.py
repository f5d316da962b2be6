"""Inference of a 3x3 stride-1 convolution -> relu -> 2x2 stride-2 max pool in one pass, with
Winograd F(2x2, 3x3) or F(4x4, 3x3).

F(m x m, 3x3) (Lavin & Gray 2016) computes an m x m block of outputs from an (m + 2) x (m + 2)
input tile with (m + 2)^2 multiplies per channel pair: per output, F(2x2, 3x3) (the training path,
``winograd``) takes 4, F(4x4, 3x3) 2.25, a direct convolution 9. F(4x4, 3x3)'s transforms cost
more (36 x 36 per input tile instead of 16 x 16) and its tiles waste more at the image's edge, so
each layer takes the one with fewer multiply-adds in all (``tile_size``: a function of the layer's
shape alone, so results never depend on the machine or the thread count). F(4x4, 3x3)'s
coefficients are larger (up to 8, and 1/6, 1/12, 1/24 in the kernel's transform): it rounds more
(6-8x the plain layers' error, see docs/speed.md), and runs only here, in inference, where nothing is
trained on its output; its kernel transform is computed in float64 and rounded once. F(2x2, 3x3)
uses the training path's kernel transform and gives the layers' values bit for bit.

An m x m block of outputs holds (m/2)^2 whole pooling windows, so each window's maximum is taken
from the output transform's rows while a group's arrays are in cache; the bias is added and relu
applied on the pooled grid (the maximum commutes with both, rounding included), and only that
quarter-size result is moved to NCHW. Groups of images, the transforms as Kronecker-product
matrix products and the thread split work as in ``winograd``.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import conv_blocks as blocks
from . import winograd
from .derived import Derived

_BT4 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
_G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_AT4 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
# m -> (tile transform, kernel transform, output transform): V = TILE d, U = KERNEL g, Y = OUTPUT M.
TRANSFORMS = {2: (winograd.TILE, winograd.KERNEL, winograd.OUTPUT),
              4: (np.kron(_BT4, _BT4), np.kron(_G4, _G4), np.kron(_AT4, _AT4))}
# Tile elements x tiles per group of images (4 images of 14x14 outputs with F(2x2, 3x3), 22 of 7x7
# with F(4x4, 3x3)): enough tiles for the products to run well; the work arrays of F(2x2)'s groups
# stay in a 2 MiB L2 cache, F(4x4)'s wider channels' do not quite. Measured on the best net's two
# pooled steps (128 images, one thread): 3,200 and 1,600 took the same time in all (1,600 was 7%
# faster on the first, 7% slower on the second), 800 was 5-15% slower.
GROUP_ELEMENTS = 3200

_kernels = {m: Derived() for m in TRANSFORMS}  # U of each kernel, while the kernel is unchanged


def tile_size(c: int, f: int, out_h: int, out_w: int) -> int:
    """2 or 4: the F(m x m, 3x3) with fewer multiply-adds for C input and F output channels and an
    out_h x out_w output (transforms as the matrix products they run as; partial edge tiles count whole)."""
    def cost(m):
        elements = (m + 2) ** 2
        return -(-out_h // m) * -(-out_w // m) * (elements * elements * c + elements * c * f + m * m * elements * f)

    return min((2, 4), key=cost)


def transform_kernel(kernel: np.ndarray, m: int) -> np.ndarray:
    """(F, C, 3, 3) -> U, ((m + 2)^2, C, F). F(2x2, 3x3)'s is the training path's own (so the pooled
    step gives the layers' values bit for bit); F(4x4, 3x3)'s is computed in float64 and rounded
    once to the kernel's type (its coefficients 1/6, 1/12, 1/24 are not exact)."""
    if m == 2:
        return winograd.transform_kernel(kernel)
    f, c = kernel.shape[:2]
    flat = kernel.transpose(2, 3, 1, 0).reshape(9, c * f).astype(np.float64)
    return (TRANSFORMS[m][1] @ flat).reshape(-1, c, f).astype(kernel.dtype)


def relu_pool(kernel: np.ndarray, bias: np.ndarray | None, x: np.ndarray, pad_h, pad_w, out_h: int, out_w: int) -> np.ndarray:
    """relu(maxpool2d(2, stride 2)(conv(x) + bias)), (N, F, out_h // 2, out_w // 2), for a 3x3
    stride-1 convolution of x (N, C, H, W) with kernel (F, C, 3, 3), padding (before, after) pad_h
    and pad_w and output (N, F, out_h, out_w). A partial last window row or column (odd out_h or
    out_w) is dropped, as maxpool2d's floor mode does."""
    n, c = x.shape[:2]
    f = kernel.shape[0]
    dtype = x.dtype
    m = tile_size(c, f, out_h, out_w)
    size, half, elements = m + 2, m // 2, (m + 2) ** 2
    th, tw = -(-out_h // m), -(-out_w // m)
    u = _kernels[m].get(functools.partial(transform_kernel, m=m), kernel)  # (elements, C, F)
    tile, output = (a.astype(dtype) for a in TRANSFORMS[m][::2])  # integers: exact
    groups = winograd.groups_of(n, max(1, GROUP_ELEMENTS // (elements * th * tw)))
    x_tiles = winograd.tile_view(winograd.padded(x, m * th + 2, m * tw + 2, pad_h, pad_w), th, tw, size, step=m)
    pooled = np.empty((th, half, tw, half, n, f), dtype)  # window rows (tile row, a), columns (tile column, b)
    by_window = pooled.transpose(1, 3, 0, 2, 4, 5)  # (a, b, th, tw, N, F)

    def pool_groups(g0, g1):
        scratch = winograd.Scratch(dtype)
        for g in range(g0, g1):
            first, images = groups[g]
            tiles = th * tw * images
            d = scratch("d", (size, size, th, tw, images, c))
            np.copyto(d, x_tiles[:, :, :, :, first : first + images])
            v = np.matmul(tile, d.reshape(elements, -1), out=scratch("v", (elements, tiles * c))).reshape(elements, tiles, c)
            products = np.matmul(v, u, out=scratch("m", (elements, tiles, f)))  # one product per tile element
            out = np.matmul(output, products.reshape(elements, -1), out=scratch("out", (m * m, tiles * f)))
            # Output (2a + i, 2b + j) of a tile is row m(2a + i) + 2b + j: the maximum over i, then j.
            by_ij = out.reshape(half, 2, half, 2, th, tw, images, f)  # (a, i, b, j, ...)
            over_i = np.maximum(by_ij[:, 0], by_ij[:, 1], out=scratch("over_i", (half, half, 2, th, tw, images, f)))
            np.maximum(over_i[:, :, 0], over_i[:, :, 1], out=by_window[:, :, :, :, first : first + images])

    blocks.run_ranges(pool_groups, winograd.group_ranges(len(groups), elements * th * tw * n * c * f))
    y = pooled.reshape(half * th, half * tw, n, f)[: out_h // 2, : out_w // 2]
    if bias is not None:
        y += bias  # along the last axis, channels
    np.maximum(y, dtype.type(0), out=y)
    return np.ascontiguousarray(y.transpose(2, 3, 0, 1))
