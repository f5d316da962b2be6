"""Augmentation of training batches: random crop with zero padding, horizontal flip, random erasing.

Each operation takes a batch ``(N, C, H, W)`` in model units and a ``numpy.random.Generator``, draws
what it needs for the whole batch at once (no Python loop over images) and returns a new array. The
training loop draws one generator per step from the seed, epoch and step (``batch_rng``), so a run's
augmentation is the same every time, whatever the order in which batches are computed.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..spec.training import AugmentSpec

AUGMENT_STREAM = 0x61756700  # "aug": keeps these generators apart from other streams drawn from the same seed
ERASING_ATTEMPTS = 10  # as torchvision's RandomErasing


def batch_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator for the augmentation of training step ``step`` (0-based) of epoch ``epoch``."""
    return np.random.default_rng([AUGMENT_STREAM, seed, epoch, step])


def random_crop(x: np.ndarray, padding: int, fill: float, rng: np.random.Generator) -> np.ndarray:
    """Pad each image by ``padding`` pixels of ``fill`` on every side, then cut an H x W window at a random offset.

    Like torchvision's ``RandomCrop(size, padding)``: offsets are uniform over 0..2*padding on each axis,
    so an image moves by up to ``padding`` pixels in each direction, with ``fill`` flowing in.
    """
    n, c, h, w = x.shape
    padded = np.full((n, c, h + 2 * padding, w + 2 * padding), fill, dtype=x.dtype)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    top = rng.integers(0, 2 * padding + 1, n)
    left = rng.integers(0, 2 * padding + 1, n)
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W), a view
    return windows[np.arange(n), :, top, left]  # (N, C, H, W), one window per image


def horizontal_flip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``."""
    flip = rng.random(len(x)) < p
    return np.where(flip[:, None, None, None], x[..., ::-1], x)


def random_erasing(
    x: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> np.ndarray:
    """torchvision's ``RandomErasing``: with probability ``p``, set one rectangle of an image (all channels) to ``value``.

    The rectangle covers a fraction of the area drawn uniformly from ``scale``, with an aspect ratio
    (height / width) drawn log-uniformly from ``ratio``; of up to 10 such draws the first that fits
    inside the image is used, and an image for which none fits is left alone. Its corner is uniform
    over the positions where it fits.
    """
    n, _, h, w = x.shape
    area = rng.uniform(scale[0], scale[1], (n, ERASING_ATTEMPTS)) * (h * w)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, ERASING_ATTEMPTS)))
    heights = np.round(np.sqrt(area * aspect)).astype(np.int64)  # (N, attempts)
    widths = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (heights < h) & (widths < w)
    first = fits.argmax(axis=1)  # the first attempt that fits (0 when none does: then `erase` is False)
    rows = np.arange(n)
    eh, ew = heights[rows, first], widths[rows, first]
    erase = (rng.random(n) < p) & fits.any(axis=1)
    top = (rng.random(n) * (h - eh + 1)).astype(np.int64)  # uniform over 0..h-eh
    left = (rng.random(n) * (w - ew + 1)).astype(np.int64)
    ys, xs = np.arange(h), np.arange(w)
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # (N, H)
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # (N, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (N, H, W)
    return np.where(mask[:, None], x.dtype.type(value), x)


class Augmenter:
    """The spec's ``data.augment`` as one call per training batch: crop, then flip, then erasing (torchvision's usual order).

    ``fill`` is the crop padding in model units: the preprocessed value of a raw 0 (black) pixel, as
    torchvision pads images before normalising them. Erasing writes ``value`` in model units.
    """

    def __init__(self, spec: AugmentSpec, fill: float, seed: int):
        self.spec, self.fill, self.seed = spec, fill, seed

    @property
    def active(self) -> bool:
        return self.spec.active

    def __call__(self, x: np.ndarray, epoch: int, step: int) -> np.ndarray:
        rng = batch_rng(self.seed, epoch, step)
        s = self.spec
        if s.crop_padding:
            x = random_crop(x, s.crop_padding, self.fill, rng)
        if s.hflip:
            x = horizontal_flip(x, rng)
        if s.erasing is not None and s.erasing.p > 0:
            e = s.erasing
            x = random_erasing(x, rng, e.p, tuple(e.scale), tuple(e.ratio), e.value)
        return x
