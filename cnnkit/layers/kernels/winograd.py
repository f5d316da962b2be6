"""Winograd F(2x2, 3x3): 3x3 stride-1 convolutions with 16 multiplies per 2x2 outputs instead of 36.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The padded input is cut
into 4x4 tiles d that overlap by 2, one per 2x2 block of outputs. Each tile and each 3x3 kernel g
are transformed, V = BT d BT' and U = G g G'; the 16 elements of a tile are then 16 independent
products over the channels, M[e] = V[e] @ U[e] ((tiles, C) times (C, F)); and each tile's 2x2
outputs are AT M AT'. The products are 2.25x fewer multiply-adds than a direct convolution.

Each transform is one small matrix product too, with the Kronecker product of the 1-D transform
(16 x 16 for a tile, 4 x 16 for its outputs, 16 x 9 for a kernel): one BLAS call instead of a
dozen elementwise passes. Their coefficients are 0, +-1, +-1/2 and 1/4, so every product in them
is exact.

The batch is padded and moved channels last, (rows, columns, images, C), once per call. The unit of
work is a group of GROUP images: its tiles are a slice of one strided view of that array, its 16
products are (tiles, C) @ (C, F) with every tile of the group, and its work arrays (reused group
after group) stay in L2.

In training, a batch too small to pay for transforming the kernel and its gradient takes the direct
path instead (``pays_in_training``). Inference's convolution -> relu -> 2x2 max pool step pools
inside a Winograd kernel of its own (``winograd_pool``).

Backward is the exact adjoint of forward, in the transformed domain: dM = (AT' dY AT) per tile,
dU = sum over tiles of V' dM (then dg = G' dU G), dV = dM U' (then each tile's BT' dV BT is added
back where the tiles overlap, in a fixed order), with V kept from forward.

Results depend on the shapes alone, never on the thread split: threads take whole groups, every
BLAS call covers exactly one group (so each has a fixed shape: BLAS may round a value differently
in a product of another size), and the kernel gradient is summed group by group in order.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import conv_blocks as blocks
from .derived import Derived

# Which convolutions take this path: a fixed function of the layer's shape, never of the machine
# (the path rounds differently from the direct one). Below 16 input or output channels the 16
# products are too thin for BLAS to beat the direct path's one product (see docs/speed.md).
MIN_CHANNELS = 16
# Images per group: a group is the unit of work, one (tiles, C) matrix per tile element, small
# enough to stay in a core's L2 cache. Fixed (it sets every product's shape, so results depend on
# it), not tuned per machine.
GROUP = 4

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])  # tile: V = BT d BT'
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # kernel: U = G g G'
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])  # outputs: Y = AT M AT'
TILE = np.kron(_BT, _BT)  # (16, 16): a flattened 4x4 tile -> its 16 elements, V = TILE @ d
KERNEL = np.kron(_G, _G)  # (16, 9): a flattened 3x3 kernel -> U
OUTPUT = np.kron(_AT, _AT)  # (4, 16): M -> the flattened 2x2 outputs


def suits(c: int, k: int, f: int) -> bool:
    """Whether a stride-1 convolution with C input channels, a k x k kernel and F filters runs here."""
    return k == 3 and c >= MIN_CHANNELS and f >= MIN_CHANNELS


# A training call transforms the kernel forward and its gradient back (work in proportion to
# C * F, whatever the batch), so Winograd pays only when the batch saves enough: in multiply-adds
# per (input, output) channel pair, 9 per output of a direct convolution against 16 per 2x2 tile.
# Measured, forward + backward, one thread (Intel Xeon, family 6 model 167): 64 -> 128 channels at
# 7x7 saves 185 an image (batch 1: direct 0.49-0.53 ms, Winograd 1.22-1.31; batch 4, saving 740:
# 1.26-1.32 against 1.19-1.20, about even); 32 -> 64 at 14x14 saves 980 (batch 1: Winograd
# 0.29-0.31 ms, direct 0.36-0.38). A function of the batch's shape, never of the machine. (In a
# model the batch here is a part's: for outputs of 3x3 or less the thread count can tip it, and
# the thread count already sets the parts of a batch of 32 or more.)
MIN_SAVED_IN_TRAINING = 512


def pays_in_training(n: int, out_h: int, out_w: int) -> bool:
    """Whether a training call on n images with an out_h x out_w output saves enough multiply-adds
    to pay for transforming the kernel and its gradient (MIN_SAVED_IN_TRAINING)."""
    return n * (9 * out_h * out_w - 16 * -(-out_h // 2) * -(-out_w // 2)) >= MIN_SAVED_IN_TRAINING


_kernels = Derived()  # inference: U of each kernel, while the kernel is unchanged


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
    """(F, C, 3, 3) -> U, (16, C, F): U[e] = (G g G') element e, for every (c, f)."""
    f, c = kernel.shape[:2]
    flat = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)).reshape(9, c * f)  # [(i, j), (c, f)]
    return (KERNEL.astype(kernel.dtype) @ flat).reshape(16, c, f)


def kernel_gradient(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_kernel``: dU (16, C, F) -> dg (F, C, 3, 3)."""
    _, c, f = du.shape
    return np.ascontiguousarray((KERNEL.T.astype(du.dtype) @ du.reshape(16, c * f)).reshape(3, 3, c, f).transpose(3, 2, 0, 1))


def tile_view(a: np.ndarray, th: int, tw: int, size: int, step: int = 2) -> np.ndarray:
    """The size x size tiles (stride ``step``) of a channels-last array a (H, W, ...), as a
    (size, size, th, tw, ...) view: element (i, j) of tile (r, t) is a[step*r + i, step*t + j]."""
    s = a.strides
    return as_strided(a, (size, size, th, tw, *a.shape[2:]), (s[0], s[1], step * s[0], step * s[1], *s[2:]), writeable=False)


def groups_of(n: int, group: int = GROUP) -> list[tuple[int, int]]:
    """(first image, images) of each group: ``group`` images, the last group the rest."""
    return [(g, min(group, n - g)) for g in range(0, n, group)]


def group_ranges(groups: int, macs: int) -> list[tuple[int, int]]:
    """Groups per thread, for a batch the model does not split (as ``conv_blocks.image_ranges``)."""
    from ...runtime import parallel

    if groups < 2 or parallel.in_task() or not parallel.spare_cores():
        return [(0, groups)]
    parts = min(parallel.num_threads(), groups, macs // blocks.SPLIT_MIN_MACS)
    if parts < 2:
        return [(0, groups)]
    bounds = [groups * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class Scratch:
    """One thread's work arrays, by name and shape, reused group after group so they stay in cache."""

    def __init__(self, dtype):
        self.dtype, self.arrays = dtype, {}

    def __call__(self, name: str, shape: tuple) -> np.ndarray:
        key = (name, shape)
        if key not in self.arrays:
            self.arrays[key] = np.empty(shape, self.dtype)
        return self.arrays[key]


def forward(kernel: np.ndarray, bias: np.ndarray | None, x: np.ndarray, pad_h, pad_w, out_h: int, out_w: int, train: bool, input_grad: bool):
    """y, backprop for a 3x3 stride-1 convolution of x (N, C, H, W) with kernel (F, C, 3, 3), padding
    (before, after) pad_h and pad_w, output (N, F, out_h, out_w)."""
    n, c, h, w = x.shape
    f = kernel.shape[0]
    dtype = x.dtype
    th, tw = -(-out_h // 2), -(-out_w // 2)
    u = _kernels.get(transform_kernel, kernel) if not train else transform_kernel(kernel)  # (16, C, F)
    tile, output = TILE.astype(dtype), OUTPUT.astype(dtype)
    groups = groups_of(n)
    kept: list = [None] * len(groups)  # V per group, for backprop
    # The batch padded and channels last, (H, W, N, C), in one transposing copy: a group's tiles are
    # then a slice of one strided view (numpy calls per group are few: with two threads, each call
    # may wait for the interpreter lock).
    x_tiles = tile_view(padded(x, 2 * th + 2, 2 * tw + 2, pad_h, pad_w), th, tw, 4)
    y_tiles = np.empty((th, 2, tw, 2, n, f), dtype)  # the output by tile, channels last: (tile row, r, tile column, s, N, F)
    ranges = group_ranges(len(groups), 16 * th * tw * n * c * f)

    def transformed(g, scratch, v=None):
        """V of group g: (16, th*tw*G, C), one (tiles, C) matrix per tile element."""
        first, size = groups[g]
        d = scratch("d", (4, 4, th, tw, size, c))
        np.copyto(d, x_tiles[:, :, :, :, first : first + size])
        v = np.empty((16, th * tw * size, c), dtype) if v is None else v
        np.matmul(tile, d.reshape(16, -1), out=v.reshape(16, -1))
        return v

    def forward_groups(g0, g1):
        scratch = Scratch(dtype)
        for g in range(g0, g1):
            first, size = groups[g]
            tiles = th * tw * size
            v = transformed(g, scratch, None if train else scratch("v", (16, tiles, c)))
            if train:
                kept[g] = v
            m = np.matmul(v, u, out=scratch("m", (16, tiles, f)))  # one product per tile element
            out = np.matmul(output, m.reshape(16, -1), out=scratch("out", (4, tiles * f)))  # outputs (r, s) of each tile
            np.copyto(y_tiles[:, :, :, :, first : first + size], out.reshape(2, 2, th, tw, size, f).transpose(2, 0, 3, 1, 4, 5))

    blocks.run_ranges(forward_groups, ranges)
    if train:
        x_tiles = None  # backprop has V of every group: the padded batch can go
    y = np.ascontiguousarray(y_tiles.reshape(2 * th, 2 * tw, n, f)[:out_h, :out_w].transpose(2, 3, 0, 1))
    if bias is not None:
        y.reshape(n, f, -1)[...] += bias[:, None]

    def backprop(dy):
        grads = {}
        if bias is not None:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        ut = np.ascontiguousarray(u.transpose(0, 2, 1))
        # dy padded to whole tiles and channels last, (2th, 2tw, N, F); dx's tiles are added into
        # a padded channels-last (H, W, N, C) array, moved to NCHW once at the end.
        dy_tiles = tile_view(padded(dy, 2 * th, 2 * tw, (0, 2 * th - out_h), (0, 2 * tw - out_w)), th, tw, 2)
        dxp = np.zeros((2 * th + 2, 2 * tw + 2, n, c), dy.dtype) if input_grad else None  # each group adds into its own images

        def backward_groups(g0, g1):
            scratch = Scratch(dy.dtype)
            sums = []  # per group, in order: (16, C, F)
            for g in range(g0, g1):
                first, size = groups[g]
                tiles = th * tw * size
                v = kept[g] if kept[g] is not None else transformed(g, scratch)  # forward ran in inference mode
                dy_group = scratch("dy_tiles", (2, 2, th, tw, size, f))
                np.copyto(dy_group, dy_tiles[:, :, :, :, first : first + size])
                dm = scratch("dm", (16, tiles, f))
                np.matmul(output.T, dy_group.reshape(4, -1), out=dm.reshape(16, -1))
                sums.append(np.matmul(v.transpose(0, 2, 1), dm))  # (16, C, F), summed over the group's tiles
                if input_grad:
                    dv = np.matmul(dm, ut, out=scratch("dv", (16, tiles, c)))
                    d_tiles = scratch("d_tiles", (16, th, tw, size, c))
                    np.matmul(tile.T, dv.reshape(16, -1), out=d_tiles.reshape(16, -1))
                    _overlap_add(d_tiles, dxp[:, :, first : first + size])
            return sums

        group_sums = [s for part in blocks.run_ranges(backward_groups, ranges) for s in part]
        du = group_sums[0].copy()
        for s in group_sums[1:]:  # group by group, in order
            du += s
        grads["kernel"] = kernel_gradient(du)
        dx = np.ascontiguousarray(dxp[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w].transpose(2, 3, 0, 1)) if input_grad else None
        return dx, grads

    return y, backprop


def padded(a: np.ndarray, hp: int, wp: int, pad_h, pad_w) -> np.ndarray:
    """a (N, C, H, W) channels last, (hp, wp, N, C), with pad_h[0] zero rows before it and
    pad_w[0] zero columns (zeros after it to fill hp x wp)."""
    n, c, h, w = a.shape
    out = np.empty((hp, wp, n, c), a.dtype)
    out[: pad_h[0]] = 0
    out[pad_h[0] + h :] = 0
    out[pad_h[0] : pad_h[0] + h, : pad_w[0]] = 0
    out[pad_h[0] : pad_h[0] + h, pad_w[0] + w :] = 0
    out[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = a.transpose(2, 3, 0, 1)
    return out


def _overlap_add(tiles: np.ndarray, dxp: np.ndarray) -> None:
    """dxp (2th + 2, 2tw + 2, ...) = the tiles (16, th, tw, ...) added where they overlap.

    Tile element (2p + r, 2q + s) of tile (a, b) lands on position (2(a + p) + r, 2(b + q) + s):
    seen as 2x2 blocks, each (p, q) adds one whole block-shifted array. (0, 0) is written, then
    (0, 1), (1, 0) and (1, 1) are added, so each position sums its terms in that fixed order; the
    last block row and column, which (0, 0) does not reach, must hold zeros."""
    th, tw = tiles.shape[1:3]
    rest = tiles.shape[3:]
    by_block = dxp.reshape(th + 1, 2, tw + 1, 2, *rest)
    by_pq = tiles.reshape(2, 2, 2, 2, th, tw, *rest)  # (p, r, q, s, a, b, ...)
    for p, q in ((0, 0), (0, 1), (1, 0), (1, 1)):
        source = by_pq[p, :, q].transpose(2, 0, 3, 1, *range(4, 4 + len(rest)))  # (a, r, b, s, ...)
        target = by_block[p : p + th, :, q : q + tw]
        if p == q == 0:
            target[...] = source
        else:
            target += source
