"""Winograd F(2x2, 3x3): 3x3 stride-1 convolutions with 16 multiplies per 2x2 outputs instead of 36.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The padded input is cut
into 4x4 tiles d that overlap by 2, one per 2x2 block of outputs. Each tile and each 3x3 kernel g
are transformed, V = BT d BT' and U = G g G'; the 16 elements of a tile are then 16 independent
products over the channels, M[e] = V[e] @ U[e] ((tiles, C) times (C, F)); and each tile's 2x2
outputs are AT M AT'. The products are 2.25x fewer multiply-adds than a direct convolution.

Each transform is one small matrix product too, with the Kronecker product of the 1-D transform
(16 x 16 for a tile, 4 x 16 for its outputs, 16 x 9 for a kernel): one BLAS call per tile row
instead of a dozen elementwise passes. Their coefficients are 0, +-1, +-1/2 and 1/4, so every
product in them is exact.

Arrays are channels last inside, (rows, columns, N, C): a tile row of every image is then one
(tiles * N, C) matrix per tile element, and the tiles of a tile row are one strided view of the
padded input.

Backward is the exact adjoint of forward, in the transformed domain: dM = (AT' dY AT) per tile,
dU = sum over tiles of dM' V (then dg = G' dU G), dV = dM U' (then each tile's BT' dV BT is added
back where the tiles overlap), with V kept from forward.

Results depend on the shapes alone, never on the block size or the thread split: blocks and threads
take whole tile rows, every BLAS call covers exactly one tile row (so each has a fixed shape: BLAS
may round a value differently in a product of another size), the kernel gradient is summed tile
row by tile row in order, and the overlapping tiles of dx are added once every tile row is done.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import conv_blocks as blocks

# Which convolutions take this path: a fixed function of the layer's shape, never of the machine
# (the path rounds differently from the direct one). Below 16 input or output channels the 16
# products are too thin for BLAS to beat the direct path's one product (see docs/speed.md).
MIN_CHANNELS = 16

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])  # tile: V = BT d BT'
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # kernel: U = G g G'
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])  # outputs: Y = AT M AT'
TILE = np.kron(_BT, _BT)  # (16, 16): a flattened 4x4 tile -> its 16 elements, V = TILE @ d
KERNEL = np.kron(_G, _G)  # (16, 9): a flattened 3x3 kernel -> U
OUTPUT = np.kron(_AT, _AT)  # (4, 16): M -> the flattened 2x2 outputs


def suits(c: int, k: int, f: int) -> bool:
    """Whether a stride-1 convolution with C input channels, a k x k kernel and F filters runs here."""
    return k == 3 and c >= MIN_CHANNELS and f >= MIN_CHANNELS


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
    """(F, C, 3, 3) -> U, (16, C, F): U[e] = (G g G') element e, for every (c, f)."""
    f, c = kernel.shape[:2]
    flat = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)).reshape(9, c * f)  # [(i, j), (c, f)]
    return (KERNEL.astype(kernel.dtype) @ flat).reshape(16, c, f)


def kernel_gradient(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_kernel``: dU (16, C, F) -> dg (F, C, 3, 3)."""
    _, c, f = du.shape
    return np.ascontiguousarray((KERNEL.T.astype(du.dtype) @ du.reshape(16, c * f)).reshape(3, 3, c, f).transpose(3, 2, 0, 1))


def _tiles(padded: np.ndarray, r0: int, rows: int, tw: int, size: int) -> np.ndarray:
    """The size x size tiles (stride 2) of tile rows [r0, r0 + rows) of a channels-last array, as
    a (rows, size, size, tw, N, C) view: element (i, j) of tile (r, t) is padded[2r + i, 2t + j]."""
    s = padded.strides
    return as_strided(padded[2 * r0 :], (rows, size, size, tw, *padded.shape[2:]), (2 * s[0], s[0], s[1], 2 * s[1], *s[2:]), writeable=False)


def _row_blocks(t0: int, t1: int, per_row: int) -> list[tuple[int, int]]:
    """Blocks of the tile rows [t0, t1), as many rows as fit in block_bytes() (at least one)."""
    per = max(1, blocks.block_bytes() // per_row)
    return [(r, min(r + per, t1)) for r in range(t0, t1, per)]


def _row_ranges(th: int, macs_per_row: int) -> list[tuple[int, int]]:
    """Tile rows per thread, for a batch the model does not split (see ``conv_blocks.image_ranges``)."""
    from ...runtime import parallel

    if th < 2 or parallel.in_task() or not parallel.spare_cores():
        return [(0, th)]
    parts = min(parallel.num_threads(), th, macs_per_row * th // blocks.SPLIT_MIN_MACS)
    if parts < 2:
        return [(0, th)]
    bounds = [th * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def forward(kernel: np.ndarray, bias: np.ndarray | None, x: np.ndarray, pad_h, pad_w, out_h: int, out_w: int, train: bool, input_grad: bool):
    """y, backprop for a 3x3 stride-1 convolution of x (N, C, H, W) with kernel (F, C, 3, 3), padding
    (before, after) pad_h and pad_w, output (N, F, out_h, out_w)."""
    n, c, h, w = x.shape
    f = kernel.shape[0]
    dtype = x.dtype
    th, tw = -(-out_h // 2), -(-out_w // 2)
    hp, wp = 2 * th + 2, 2 * tw + 2  # the tiles' reach: at least the padded input
    u = transform_kernel(kernel)  # (16, C, F)
    tile, output = TILE.astype(dtype), OUTPUT.astype(dtype)
    xp = np.zeros((hp, wp, n, c), dtype)
    xp[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x.transpose(2, 3, 0, 1)
    kept = np.empty((th, 16, tw * n * c), dtype) if train else None  # V, for backprop
    y_last = np.empty((2 * th, 2 * tw, n, f), dtype)
    per_row = 36 * tw * n * (c + f) * x.itemsize
    ranges = _row_ranges(th, 16 * tw * n * c * f)

    def transformed(r0, r1):
        """V of tile rows [r0, r1): (rows, 16, tw*N*C)."""
        d = np.empty((r1 - r0, 16, tw * n * c), dtype)
        np.copyto(d.reshape(r1 - r0, 4, 4, tw, n, c), _tiles(xp, r0, r1 - r0, tw, 4))
        return np.matmul(tile, d)

    def forward_rows(t0, t1):
        for r0, r1 in _row_blocks(t0, t1, per_row):
            rows = r1 - r0
            v = transformed(r0, r1)
            if train:
                kept[r0:r1] = v
            m = np.matmul(v.reshape(rows, 16, tw * n, c), u)  # (rows, 16, tw*N, F): one product per row and element
            out = np.matmul(output, m.reshape(rows, 16, tw * n * f))  # (rows, (r, s), tw*N*F)
            np.copyto(y_last[2 * r0 : 2 * r1].reshape(rows, 2, tw, 2, n, f), out.reshape(rows, 2, 2, tw, n, f).transpose(0, 1, 3, 2, 4, 5))

    blocks.run_ranges(forward_rows, ranges)
    y = np.ascontiguousarray(y_last[:out_h, :out_w].transpose(2, 3, 0, 1))
    if bias is not None:
        y.reshape(n, f, -1)[...] += bias[:, None]

    def backprop(dy):
        v_all = kept if kept is not None else transformed(0, th)  # forward ran in inference mode
        grads = {}
        if bias is not None:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        dyp = np.zeros((2 * th, 2 * tw, n, f), dy.dtype)
        dyp[:out_h, :out_w] = dy.transpose(2, 3, 0, 1)
        d_tiles = np.empty((th, 16, tw, n, c), dy.dtype) if input_grad else None  # BT' dV BT per tile

        def backward_rows(t0, t1):
            sums = []  # per tile row, in order: (16, C, F)
            for r0, r1 in _row_blocks(t0, t1, per_row):
                rows = r1 - r0
                dy_tiles = np.empty((rows, 4, tw * n * f), dy.dtype)
                np.copyto(dy_tiles.reshape(rows, 2, 2, tw, n, f), _tiles(dyp, r0, rows, tw, 2))
                dm = np.matmul(output.T, dy_tiles).reshape(rows, 16, tw * n, f)
                v = v_all[r0:r1].reshape(rows, 16, tw * n, c)
                du = np.matmul(v.transpose(0, 1, 3, 2), dm)  # (rows, 16, C, F)
                sums += list(du)
                if input_grad:
                    dv = np.matmul(dm, u.transpose(0, 2, 1))  # (rows, 16, tw*N, C)
                    np.matmul(tile.T, dv.reshape(rows, 16, tw * n * c), out=d_tiles[r0:r1].reshape(rows, 16, tw * n * c))
            return sums

        row_sums = [s for part in blocks.run_ranges(backward_rows, ranges) for s in part]
        du = row_sums[0].copy()
        for s in row_sums[1:]:  # tile row by tile row, in order
            du += s
        grads["kernel"] = kernel_gradient(du)
        if not input_grad:
            return None, grads
        dxp = np.empty((hp, wp, n, c), dy.dtype)
        dxp[2 * th :] = 0  # reached only by the last tile row's elements 2 and 3
        dxp[:, 2 * tw :] = 0
        for e in (0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15):  # elements (i, j) with i, j < 2 cover the rest once
            i, j = divmod(e, 4)
            target = dxp[i : i + 2 * th : 2, j : j + 2 * tw : 2]
            if i < 2 and j < 2:
                target[...] = d_tiles[:, e]
            else:
                target += d_tiles[:, e]
        dx = np.ascontiguousarray(dxp[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w].transpose(2, 3, 0, 1))
        return dx, grads

    return y, backprop
