"""Test-time augmentation: the views of a batch that a spec's ``predict.tta`` names, and their mean probabilities.

The views, in this order: the batch as it is, then (with ``shift:N``) moved N pixels up, down,
left and right; with ``hflip`` the same again for the mirrored batch. Pixels a shift uncovers are
black: ``fill``, the model value of a raw 0 (the same fill as the random crop in training).

Probabilities are averaged, not logits: each view's softmax is a distribution, so their mean is
one too (``predict_proba`` rows keep summing to 1), a view that is confidently wrong weighs at
most 1/views (a logit can outvote the others by any amount), and the ONNX graph averages exactly
what it outputs for a single view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..spec.predict import PredictSpec
from .losses import softmax

# (rows, columns) the content moves by for each shifted view, in view order: up, down, left, right.
SHIFT_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def black_value(divide: float, subtract: float) -> float:
    """The model value of a raw 0 pixel, computed as ``Model.preprocess`` computes it (float32)."""
    return float(np.float32(0) / np.float32(divide) - np.float32(subtract))


def shifted(x: np.ndarray, rows: int, columns: int, fill: float) -> np.ndarray:
    """``x`` (N, C, H, W) with its content moved ``rows`` down and ``columns`` right (negative: up, left), ``fill`` flowing in."""
    h, w = x.shape[-2:]
    out = np.full_like(x, fill)
    out[..., max(rows, 0) : h + min(rows, 0), max(columns, 0) : w + min(columns, 0)] = \
        x[..., max(-rows, 0) : h + min(-rows, 0), max(-columns, 0) : w + min(-columns, 0)]
    return out


def views(x: np.ndarray, tta: PredictSpec, fill: float) -> Iterator[np.ndarray]:
    """Every view of the batch ``x`` (N, C, H, W) that ``tta`` asks for, the batch itself first."""
    for flipped in (False, True) if tta.hflip else (False,):
        base = np.ascontiguousarray(x[..., ::-1]) if flipped else x
        yield base
        for rows, columns in SHIFT_DIRECTIONS if tta.shift else ():
            yield shifted(base, rows * tta.shift, columns * tta.shift, fill)


def mean_probabilities(logits_of: Callable[[np.ndarray], np.ndarray], x: np.ndarray, tta: PredictSpec, fill: float,
                       dtype: type = np.float32) -> np.ndarray:
    """The mean over the views of ``x`` of softmax(``logits_of(view)``), (N, classes), in ``dtype``."""
    total = None
    for view in views(x, tta, fill):
        p = softmax(logits_of(view).astype(dtype, copy=False))
        total = p if total is None else total + p
    return total / dtype(tta.views)
