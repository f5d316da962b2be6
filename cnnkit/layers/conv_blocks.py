"""The blocked stride-1 convolution behind ``conv2d``: im2col rows as shifted views of a flat padded
layout, built and multiplied one L2-sized block of images at a time.

``Conv2D`` (conv.py) calls these for stride 1; they know nothing about layers or weights' names.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


# Stride-1 convolution works one block of images at a time, sized so that its working set (the
# copied input rows and the partial outputs) stays in a core's L2 cache, with few enough blocks
# that the per-block Python work (which holds the GIL while the other thread waits for it) stays
# small. The size comes from the machine (``cnnkit.runtime.tuning.block_bytes``: a share of the L2 the OS
# reports); set BLOCK_BYTES to override it (tests shrink it to exercise the block boundaries).
BLOCK_BYTES: int | None = None
# An image whose working set exceeds PIECE_BYTES is cut into pieces of its positions. This is fixed,
# not tuned: the kernel gradient sums over positions piece by piece, so the cuts set the order of
# that sum, and results must not depend on the machine.
PIECE_BYTES = 1024 * 1024


def block_bytes() -> int:
    if BLOCK_BYTES is not None:
        return BLOCK_BYTES
    from ..runtime import tuning

    return tuning.block_bytes()


def flat_padded(x: np.ndarray, pad_h: tuple[int, int], pad_w: tuple[int, int], tail: int = 0) -> np.ndarray:
    """(N, C, H, W) -> 1-D: each image's channels zero-padded to (Hp, Wp) in NCHW order, then
    ``tail`` zeros.

    In this layout, for stride 1, the input under kernel offset (i, j) of every output position is
    the same array shifted by i*Wp + j, so the rows of an im2col are contiguous slices.
    """
    n, c, h, w = x.shape
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    flat = np.zeros(n * c * hp * wp + tail, x.dtype)
    flat[: n * c * hp * wp].reshape(n, c, hp, wp)[:, :, pad_h[0] : pad_h[0] + h, pad_w[0] : pad_w[0] + w] = x
    return flat


def copies_kernel_rows(c: int, k: int, f: int) -> bool:
    """How the blocks below get their im2col rows, from C input channels for F output rows.

    A full im2col copies C*k*k rows per position for one product. Copying only the C*k rows of one
    kernel row (the input shifted by j) and taking the k kernel rows as views shifted by i*Wp
    instead costs C*k copied rows plus k*F partial-output rows written and summed, for k products.
    Whichever moves fewer rows wins: C*k*k vs C*k + 2*k*F, i.e. C*(k-1) vs 2*F. (Seed net: conv1,
    C=1, copies the full im2col; conv2, C=6, F=6, shares the shifted rows. Measured on conv2 forward,
    128 images in each of 2 threads: 7.0 ms copying the full im2col, 4.9 ms sharing.)
    """
    return c * (k - 1) <= 2 * f


def im2col_blocks(flat: np.ndarray, n: int, c: int, plane: int, start: int, window: int, k: int, row: int, out_rows: int, shared: bool, ones: bool = False):
    """Yield (m0, m1, lo, hi, cols) over blocks of images [m0, m1) and positions [lo, hi) of the
    window [start, start + window) of each of their C planes (``plane`` positions each) in ``flat``.

    ``cols`` is a (images, G, R, hi - lo) view: the im2col of the block's positions, rows ordered
    (kernel row i, channel c, kernel column j), in G groups of R rows. Either the whole im2col is
    copied (G = 1, R = k*C*k), or only the C*k rows of kernel row 0 (the input shifted by j), and
    group i is that copy shifted by i*row: G = k, R = C*k (``shared``; see ``copies_kernel_rows``). With
    ``ones`` each group has one more row, of ones, so a product with it also adds a bias column.

    A block holds whole windows of as many images as fit in ``block_bytes()`` (``out_rows``: rows
    of each partial output the caller keeps per position), or part of one image's window when an
    image's working set exceeds PIECE_BYTES. The first block is the largest. One buffer is reused:
    use each block before asking for the next.
    """
    groups, rows = (k, c * k) if shared else (1, k * c * k)
    reach = (k - 1) * row if shared else 0  # extra positions copied so the shifted views stay inside
    itemsize = flat.itemsize
    per_image = ((rows + ones) * (window + reach) + groups * out_rows * window) * itemsize
    if per_image <= PIECE_BYTES:  # whole windows, as many images per block as fit (at least one)
        per = max(1, block_bytes() // per_image)
        pieces = [(m, min(m + per, n), 0, window) for m in range(0, n, per)]
    else:  # each image's window in near-equal parts, the longer ones first
        count = -(-per_image // PIECE_BYTES)
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


def grouped(weights: np.ndarray, shared: bool, ones: bool = False) -> np.ndarray:
    """(k, F, C*k [+ 1]) weights per kernel row (the last column against the ones row, if ``ones``)
    -> the (G, F, R) matrices against the groups of ``im2col_blocks`` with the same ``shared``."""
    if shared:
        return weights
    k, f, width = weights.shape
    whole = weights[:, :, : width - ones].transpose(1, 0, 2).reshape(f, k * (width - ones))
    if ones:
        whole = np.concatenate([whole, weights[0, :, -1:]], axis=1)
    return whole[None]


def multiply(weights: np.ndarray, cols: np.ndarray, out: np.ndarray, scratch: list) -> None:
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


# -- splitting one convolution over threads (small batches) -----------------------------------------

# A batch too small for the model to split over threads (see ``Model._parts``) still uses every core
# in its convolutions: their images are split into ranges, one per thread. The kernel gradient is
# summed in chunks of CHUNK images (each chunk image by image, then the chunks in order), and ranges
# hold whole chunks, so that sum is the same however the images are split and whichever images
# share a block: splitting and block sizes change speed, never results. CHUNK is fixed for that
# reason, not tuned.
CHUNK = 4
# A busy machine (load average at or above threads + 1) gets no split: the second thread would wait
# for a core while the first waits for it (measured at load 6-8 on 2 cores: batch 16 trained 21%
# slower split than whole). That check may change its answer at any time, which is safe only
# because splitting cannot change results.
# Fewest multiply-adds per range worth a thread: below it the hand-over (waking a thread, and two
# threads taking turns at the interpreter lock between NumPy calls) costs more than it saves. It was
# 500,000 (measured on an AMD EPYC Zen 4: the seed net's conv1 at batch 8, about 1 M per half,
# gained). On an Intel Xeon (family 6 model 167, 2 threads) that split made training slower at every
# small batch: seed net batch 8 / 16 2,670-2,990 / 3,990-4,250 images/s split against 4,380-4,590 /
# 5,030-5,040 whole; best net batch 8 751-776 against 853-869, batch 16 836-908 against 879-890.
# At 50 M a range holds several milliseconds of one core's work: a batch of 16 of either net stays whole.
SPLIT_MIN_MACS = 50_000_000


def image_ranges(n: int, macs_per_image: int) -> list[tuple[int, int]]:
    """Ranges [lo, hi) of whole CHUNKs of the n images, one per thread when the work pays for it."""
    from ..runtime import parallel

    if n <= CHUNK or parallel.in_task() or not parallel.spare_cores():
        return [(0, n)]
    chunks = -(-n // CHUNK)
    parts = min(parallel.num_threads(), chunks, n * macs_per_image // SPLIT_MIN_MACS)
    if parts < 2:
        return [(0, n)]
    bounds = [min(n, chunks * i // parts * CHUNK) for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def chunk_blocks(a: int, b: int, per_image: int) -> list[tuple[int, int]]:
    """Blocks of the images [a, b) (a CHUNK-aligned): whole CHUNKs (but for the last), as many as fit
    in block_bytes() at ``per_image`` bytes each."""
    per = max(CHUNK, block_bytes() // per_image // CHUNK * CHUNK)
    return [(m, min(m + per, b)) for m in range(a, b, per)]


def run_ranges(task, ranges: list[tuple[int, int]]) -> list:
    """task(lo, hi) for each range, on separate threads when there are several; results in order."""
    from ..runtime import parallel

    if len(ranges) == 1:
        return [task(*ranges[0])]
    return parallel.run_all([lambda lo=lo, hi=hi: task(lo, hi) for lo, hi in ranges])


class ChunkSums:
    """Per-CHUNK sums of per-image (G, R, X) products of the images [lo, hi), as (G*R, X) arrays."""

    def __init__(self, lo: int, hi: int, shape: tuple[int, int], dtype):
        self.first, self.shape, self.dtype = lo // CHUNK, shape, dtype
        self.sums: list[np.ndarray | None] = [None] * max(-(-hi // CHUNK) - self.first, 1)  # one for no images

    def add(self, image: int, products: np.ndarray) -> None:
        """Add (images, G, R, X) products of the images from ``image`` on, image by image: a chunk's
        sum is always ((p0 + p1) + p2) + p3, whether its images came in one block or several."""
        done = 0
        while done < len(products):
            chunk = (image + done) // CHUNK
            end = min(len(products), (chunk + 1) * CHUNK - image)
            index = chunk - self.first
            if self.sums[index] is None:  # the chunk starts here: numpy sums along a non-inner axis in order
                whole = (len(products) - done) // CHUNK  # whole chunks from here on: one call for all of them
                if whole > 1:
                    stacked = products[done : done + whole * CHUNK].reshape(whole, CHUNK, *products.shape[1:])
                    for j, chunk_sum in enumerate(np.add.reduce(stacked, axis=1)):
                        self.sums[index + j] = chunk_sum.reshape(self.shape)
                    done += whole * CHUNK
                    continue
                self.sums[index] = np.add.reduce(products[done:end], axis=0).reshape(self.shape)
            else:
                total = self.sums[index]
                for product in products[done:end]:
                    np.add(total, product.reshape(self.shape), out=total)
            done = end

    def put(self, image: int, chunk_sum: np.ndarray) -> None:
        """Store the whole sum of the chunk that starts at ``image`` (computed in one product)."""
        self.sums[image // CHUNK - self.first] = chunk_sum.reshape(self.shape)


def total(parts: list[ChunkSums]) -> np.ndarray:
    """The sum of all chunks, in order (a fixed order, whatever the ranges were)."""
    chunks = [s for part in parts for s in part.sums if s is not None]
    if not chunks:  # no images
        return np.zeros(parts[0].shape, parts[0].dtype)
    result = chunks[0]
    for s in chunks[1:]:
        result += s
    return result
