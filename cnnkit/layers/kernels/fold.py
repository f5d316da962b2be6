"""Batch norm folded into the convolution before it, for inference.

At inference a batch norm is an affine map per channel, y = (x - mean) * s + beta with
s = gamma / sqrt(running_var + eps); after a convolution it folds into the convolution's weights:
kernel * s (per output channel) and bias (bias - mean) * s + beta. One pass over the activations
instead of three. The folded net rounds differently from the unfolded one (about 1e-7 relative per
value; docs/speed.md gives what it does to probabilities). The ONNX export folds with this same
function, so onnxruntime and cnnkit run the same weights.
"""

from __future__ import annotations

import numpy as np


def fold_batchnorm(kernel: np.ndarray, bias: np.ndarray | None, bn: dict[str, np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the convolution that computes batch norm (running statistics ``bn``:
    gamma, beta, running_mean, running_var) of the convolution (kernel (F, ...), bias (F,) or None).
    Computed in float64 and rounded once to float32."""
    scale = np.asarray(bn["gamma"], np.float64) / np.sqrt(np.asarray(bn["running_var"], np.float64) + eps)
    shifted = -np.asarray(bn["running_mean"], np.float64) if bias is None else np.asarray(bias, np.float64) - bn["running_mean"]
    folded_kernel = (np.asarray(kernel, np.float64) * scale.reshape(-1, *([1] * (kernel.ndim - 1)))).astype(np.float32)
    folded_bias = (shifted * scale + np.asarray(bn["beta"], np.float64)).astype(np.float32)
    return folded_kernel, folded_bias
