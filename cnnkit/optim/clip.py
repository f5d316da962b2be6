"""Gradient-norm clipping over all weights together, as torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import math

import numpy as np


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in ``grads`` (replacing the dict's arrays) so their joint L2 norm is at most ``max_norm``.

    Returns the joint norm before clipping. As in torch, the scale is max_norm / (norm + 1e-6), applied
    only when below 1; a non-finite norm makes the gradients non-finite, which training reports as divergence.
    """
    total = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))
    scale = max_norm / (total + 1e-6)
    if not scale >= 1.0:  # also true for NaN, which torch propagates the same way
        for name, g in grads.items():
            grads[name] = g * g.dtype.type(scale)
    return total
