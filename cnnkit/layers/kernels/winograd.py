"""Winograd F(2x2, 3x3): 3x3 stride-1 convolutions with 16 multiplies per 2x2 outputs instead of 36.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The padded input is cut
into 4x4 tiles that overlap by 2 (one per 2x2 block of outputs); each tile d and each 3x3 kernel g
are transformed, V = Bt d Bt' and U = G g G'; the 16 elements of a tile are then 16 independent
products over channels, M[ab] = U[ab] @ V[ab] ((F, C) times (C, tiles)); and each tile's 2x2
outputs are At M At'. Those products are 2.25x fewer multiply-adds than a direct convolution; the
transforms cost sums and differences only (every coefficient is 0, +-1 or 1/2, so a transform
loses no precision), done as elementwise NumPy passes over whole blocks of images.

Backward stays in the transformed domain, as the exact adjoint of forward: dM = At' dY At,
dU = dM @ V' (then dg = G' dU G), dV = U' @ dM (then the tiles' Bt' dV Bt are added back where
tiles overlap), with V kept from forward.

Results depend on the shapes alone, never on the block size or the thread split: the transforms
are elementwise, every product covers exactly one CHUNK of images (the last, partial chunk of the
batch its own), so each has a fixed shape (BLAS may round a column differently in a product of
another width), and the kernel gradient is summed per chunk, then chunk by chunk in order
(``conv_blocks.ChunkSums``), as the other stride-1 paths do.
"""

from __future__ import annotations

import numpy as np

from .. import conv_blocks as blocks

# Which convolutions take this path: a fixed function of the layer's shape, never of the machine
# (the path rounds differently from the direct one). Below 16 input or output channels the 16
# products are too thin for BLAS to beat the direct path's one product (measured: see docs/speed.md).
MIN_CHANNELS = 16


def suits(c: int, k: int, f: int) -> bool:
    """Whether a stride-1 convolution with C input channels, a k x k kernel and F filters runs here."""
    return k == 3 and c >= MIN_CHANNELS and f >= MIN_CHANNELS


BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # input tile: V = BT d BT'
G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))  # kernel: U = G g G'
AT = ((1, 1, 1, 0), (0, 1, -1, -1))  # output tile: Y = AT M AT'


def _transposed(matrix):
    return tuple(zip(*matrix))


def combine(row, inputs, out: np.ndarray) -> np.ndarray:
    """out = sum of row[i] * inputs[i] over the non-zero coefficients, as a fixed sequence of
    elementwise passes (a +1 term first, so d2 - d1 is one subtraction, not a negation and an add)."""
    terms = sorted(((c, x) for c, x in zip(row, inputs) if c), key=lambda t: t[0] != 1)
    (c0, x0), rest = terms[0], terms[1:]
    if c0 == 1 and rest and rest[0][0] in (1, -1):
        c1, x1 = rest.pop(0)
        (np.add if c1 == 1 else np.subtract)(x0, x1, out=out)
    elif c0 == 1:
        np.copyto(out, x0)
    elif c0 == -1:
        np.negative(x0, out=out)
    else:
        np.multiply(x0, out.dtype.type(c0), out=out)
    for c, x in rest:
        if c == 1:
            np.add(out, x, out=out)
        elif c == -1:
            np.subtract(out, x, out=out)
        else:
            out += x * out.dtype.type(c)
    return out


def transform_kernel(kernel: np.ndarray) -> np.ndarray:
    """(F, C, 3, 3) -> U, (16, F, C): U[4a + b] = (G g G')[a, b] for every (f, c)."""
    f, c = kernel.shape[:2]
    rows = np.empty((4, f, c, 3), kernel.dtype)
    for a in range(4):
        combine(G[a], [kernel[:, :, i] for i in range(3)], rows[a])
    u = np.empty((4, 4, f, c), kernel.dtype)
    for a in range(4):
        for b in range(4):
            combine(G[b], [rows[a][..., j] for j in range(3)], u[a, b])
    return u.reshape(16, f, c)


def kernel_gradient(du: np.ndarray) -> np.ndarray:
    """The adjoint of ``transform_kernel``: dU (16, F, C) -> dg (F, C, 3, 3) = G' dU G."""
    _, f, c = du.shape
    du = du.reshape(4, 4, f, c)
    gt = _transposed(G)
    rows = np.empty((3, 4, f, c), du.dtype)
    for i in range(3):
        combine(gt[i], [du[a] for a in range(4)], rows[i])
    dg = np.empty((f, c, 3, 3), du.dtype)
    for i in range(3):
        for j in range(3):
            combine(gt[j], [rows[i][b] for b in range(4)], dg[:, :, i, j])
    return dg


def transform_input(xp: np.ndarray, v: list[np.ndarray]) -> None:
    """Tiles of padded rows xp (2*nt + 2, 2*tw + 2, ...) -> v[4a + b] (nt, tw, ...) = (BT d BT')[a, b]."""
    nt, tw = v[0].shape[:2]
    rows = [xp[i : i + 2 * nt : 2] for i in range(4)]
    t = np.empty((4, *rows[0].shape), xp.dtype)  # the row transform, at full padded width
    for a in range(4):
        combine(BT[a], rows, t[a])
    for a in range(4):
        columns = [t[a][:, j : j + 2 * tw : 2] for j in range(4)]
        for b in range(4):
            combine(BT[b], columns, v[4 * a + b])


def transform_output(m: list[np.ndarray], y: np.ndarray) -> None:
    """16 arrays m[4a + b] (nt, tw, ...) -> output rows y (<= 2*nt, ow, ...), each tile's AT M AT'
    (cropped at odd sizes)."""
    oh, ow = y.shape[:2]
    p = np.empty((2, 4, *m[0].shape), y.dtype)
    for b in range(4):
        for r in range(2):
            combine(AT[r], [m[4 * a + b] for a in range(4)], p[r, b])
    for r in range(2):
        hr = (oh - r + 1) // 2
        for s in range(2):
            ws = (ow - s + 1) // 2
            combine(AT[s], [p[r, b][:hr, :ws] for b in range(4)], y[r::2, s::2])


def output_gradient(dyp: np.ndarray, dm: list[np.ndarray]) -> None:
    """The adjoint of ``transform_output``: dy rows zero-padded to (2*nt, 2*tw, ...) -> dm[4a + b]
    (nt, tw, ...) = (AT' dY AT)[a, b]."""
    a_rows = _transposed(AT)
    q = np.empty((4, 2, *dm[0].shape), dyp.dtype)
    for s in range(2):
        tile_rows = [dyp[r::2, s::2] for r in range(2)]
        for a in range(4):
            combine(a_rows[a], tile_rows, q[a, s])
    for a in range(4):
        for b in range(4):
            combine(a_rows[b], [q[a, 0], q[a, 1]], dm[4 * a + b])


def input_gradient_columns(dv: list[np.ndarray], z: np.ndarray) -> None:
    """First half of the adjoint of ``transform_input``: dV (16 arrays (nt, tw, ...)) -> z (4, nt,
    2*tw + 2, ...), BT' applied along each tile's columns and the tiles added where they overlap."""
    b_rows = _transposed(BT)
    scratch = np.empty(dv[0].shape, z.dtype)
    for a in range(4):
        _overlap_add(b_rows, [dv[4 * a + b] for b in range(4)], z[a], scratch, axis=1)


def input_gradient_rows(z: np.ndarray, dxp: np.ndarray) -> None:
    """Second half: z (4, th, 2*tw + 2, ...) of every tile row -> dxp (2*th + 2, 2*tw + 2, ...).
    Done for all tile rows at once, so how the tile rows were cut into blocks changes no sum."""
    _overlap_add(_transposed(BT), list(z), dxp, np.empty(z.shape[1:], z.dtype), axis=0)


def _overlap_add(rows, inputs, out: np.ndarray, scratch: np.ndarray, axis: int) -> None:
    """out[2t + i] (along ``axis``) = sum over tiles t and i of (rows[i] . inputs)[t]: rows 0 and 1
    land on disjoint positions and are written, rows 2 and 3 overlap them and are added."""
    tiles = inputs[0].shape[axis]

    def at(i):
        index = [slice(None)] * out.ndim
        index[axis] = slice(i, i + 2 * tiles, 2)
        return out[tuple(index)]

    tail = [slice(None)] * out.ndim
    tail[axis] = slice(2 * tiles, None)
    out[tuple(tail)] = 0  # the last two positions, which only rows 2 and 3 reach
    combine(rows[0], inputs, at(0))
    combine(rows[1], inputs, at(1))
    for i in (2, 3):
        target = at(i)
        np.add(target, combine(rows[i], inputs, scratch), out=target)


def _row_blocks(t0: int, t1: int, per_row: int) -> list[tuple[int, int]]:
    """Blocks of the tile rows [t0, t1), as many rows as fit in block_bytes() (at least one)."""
    per = max(1, blocks.block_bytes() // per_row)
    return [(r, min(r + per, t1)) for r in range(t0, t1, per)]


def _row_ranges(th: int, macs_per_row: int) -> list[tuple[int, int]]:
    """Tile rows per thread: like ``conv_blocks.image_ranges``, but by rows (a batch too small to split)."""
    from ...runtime import parallel

    parts = min(parallel.num_threads(), th, macs_per_row * th // blocks.SPLIT_MIN_MACS)
    if th < 2 or parts < 2 or parallel.in_task() or not parallel.spare_cores():
        return [(0, th)]
    bounds = [th * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def forward(kernel: np.ndarray, bias: np.ndarray | None, x: np.ndarray, pad_h, pad_w, out_h: int, out_w: int, train: bool, input_grad: bool):
    """y, backprop for a 3x3 stride-1 convolution of x (N, C, H, W) with kernel (F, C, 3, 3), padding
    (before, after) pad_h and pad_w, output (N, F, out_h, out_w).

    Inside, arrays are channels last, (rows, columns, N, C): a tile row of every image is then one
    (tiles * N, C) matrix for each of the 16 products, and the transforms' passes run along long
    contiguous rows. One product per tile row and tile element, whatever the blocks or threads."""
    n, c, h, w = x.shape
    f = kernel.shape[0]
    th, tw = -(-out_h // 2), -(-out_w // 2)
    hp, wp = 2 * th + 2, 2 * tw + 2  # the tiles' reach: at least the padded input
    u = transform_kernel(kernel)  # (16, F, C)
    ut = np.ascontiguousarray(u.transpose(0, 2, 1))[:, None]  # (16, 1, C, F)
    xp = np.zeros((hp, wp, n, c), x.dtype)
    xp[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x.transpose(2, 3, 0, 1)
    kept = np.empty((16, th, tw, n, c), x.dtype) if train else None  # V, for backprop
    y_last = np.empty((out_h, out_w, n, f), x.dtype)
    per_row = (6 * wp * c + 16 * tw * c + 24 * tw * f) * n * x.itemsize
    ranges = _row_ranges(th, 16 * tw * n * c * f)

    def forward_rows(t0, t1):
        for r0, r1 in _row_blocks(t0, t1, per_row):
            v = kept[:, r0:r1] if train else np.empty((16, r1 - r0, tw, n, c), x.dtype)
            transform_input(xp[2 * r0 : 2 * r1 + 2], list(v))
            m = np.matmul(v.reshape(16, r1 - r0, tw * n, c), ut)  # (16, rows, tw*N, F)
            transform_output(list(m.reshape(16, r1 - r0, tw, n, f)), y_last[2 * r0 : 2 * r1])

    blocks.run_ranges(forward_rows, ranges)
    y = np.ascontiguousarray(y_last.transpose(2, 3, 0, 1))
    if bias is not None:
        y += bias[:, None, None]

    def backprop(dy):
        v = kept
        if v is None:  # forward ran in inference mode: transform the input now
            v = np.empty((16, th, tw, n, c), x.dtype)
            transform_input(xp, list(v))
        grads = {}
        if bias is not None:
            grads["bias"] = dy.sum(axis=(0, 2, 3))
        dyp = np.zeros((2 * th, 2 * tw, n, f), dy.dtype)
        dyp[:out_h, :out_w] = dy.transpose(2, 3, 0, 1)
        z = np.empty((4, th, wp, n, c), dy.dtype) if input_grad else None
        un = u[:, None]  # (16, 1, F, C)

        def backward_rows(t0, t1):
            sums = []  # per tile row, in order: (16, F, C)
            for r0, r1 in _row_blocks(t0, t1, per_row):
                rows = r1 - r0
                dm = np.empty((16, rows, tw, n, f), dy.dtype)
                output_gradient(dyp[2 * r0 : 2 * r1], list(dm))
                dm = dm.reshape(16, rows, tw * n, f)
                du = np.matmul(dm.transpose(0, 1, 3, 2), v[:, r0:r1].reshape(16, rows, tw * n, c))  # (16, rows, F, C)
                sums += [du[:, r] for r in range(rows)]
                if input_grad:
                    dv = np.matmul(dm, un)  # (16, rows, tw*N, C)
                    input_gradient_columns(list(dv.reshape(16, rows, tw, n, c)), z[:, r0:r1])
            return sums

        row_sums = [s for part in blocks.run_ranges(backward_rows, ranges) for s in part]
        du = row_sums[0].copy()
        for s in row_sums[1:]:  # tile row by tile row, in order
            du += s
        grads["kernel"] = kernel_gradient(du)
        if not input_grad:
            return None, grads
        dxp = np.empty((hp, wp, n, c), dy.dtype)
        input_gradient_rows(z, dxp)
        dx = np.ascontiguousarray(dxp[pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w].transpose(2, 3, 0, 1))
        return dx, grads

    return y, backprop
