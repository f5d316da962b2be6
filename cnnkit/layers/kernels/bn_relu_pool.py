"""Batch norm -> relu -> max pool as one step: the pooling happens before the relu and the shift.

Run as three layers, the net makes about ten passes over the full-size activations of a training
step forward and twenty backward. Max pooling commutes with anything monotone, and both the shift
by beta (per channel, rounded: fl(a + b) never decreases as a grows) and relu are: so the pooling
takes the scaled values and only the pooled quarter is shifted and relu'd, with exactly the values
the three layers give. Backward works on the pooled grid too: the gradient reaches one position per
window (the first maximum, as in PyTorch; none where relu cut it), so the batch-norm sums over the
gradient are sums over the windows, and only the final dx is a full-size pass.

``batch_statistics`` and ``running_statistics`` are batch norm's own arithmetic, shared with
``cnnkit.layers.batchnorm`` so both paths give the same numbers.
"""

from __future__ import annotations

import numpy as np

AXES = (0, 2, 3)


def batch_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel mean, x - mean (N, C, H, W) and biased variance of a contiguous batch."""
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=AXES)  # (C,)
    centered = x - mean[:, None, None]
    var = np.einsum("nchw,nchw->c", centered, centered) / x.dtype.type(count)
    return mean, centered, var


def running_statistics(weights: dict, mean: np.ndarray, var: np.ndarray, count: int, momentum: float) -> dict[str, np.ndarray]:
    """The new running_mean / running_var after a batch, as torch.nn.BatchNorm2d folds them in.

    The running variance takes the unbiased estimate; with one value per channel there is none,
    so the biased one (0) is folded in instead."""
    unbiased = var * var.dtype.type(count / (count - 1)) if count > 1 else var
    return {"running_mean": (1 - momentum) * weights["running_mean"] + momentum * mean,
            "running_var": (1 - momentum) * weights["running_var"] + momentum * unbiased}


def window_views(a: np.ndarray, k: int, s: int, out_h: int, out_w: int):
    """For each offset (i, j) of a k x k window, in window order, the (N, C, Ho, Wo) strided view of
    that element of every window."""
    return [a[:, :, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s] for i in range(k) for j in range(k)]


def pool_max(views: list[np.ndarray]) -> np.ndarray:
    peak = views[0].copy()
    for view in views[1:]:
        np.maximum(peak, view, out=peak)
    return peak


def train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, pool: int, stride: int):
    """Training forward of batchnorm2d -> relu -> maxpool2d on x (N, C, H, W), N*H*W >= 1.

    Returns (y, backprop, (mean, var)): y is what the three layers give, bit for bit; backprop(dy)
    returns (dx, {"gamma": ..., "beta": ...}); mean and var are the batch's, for the running
    statistics."""
    x = np.ascontiguousarray(x)  # a cropped view: one copy makes every pass below faster
    dtype = x.dtype.type
    n, c, h, w = x.shape
    count = n * h * w
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    mean, centered, var = batch_statistics(x)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    gamma, beta = gamma.astype(x.dtype, copy=False), beta.astype(x.dtype, copy=False)
    scale = gamma * inv_std
    # Batch norm's output, only where windows reach, window element by window element: each a
    # contiguous (N, C, Ho, Wo) array, so the passes below need no strided access.
    bn = np.empty((pool * pool, n, c, out_h, out_w), x.dtype)
    for part, view in zip(bn, window_views(centered, pool, stride, out_h, out_w)):
        np.multiply(view, scale[:, None, None], out=part)
        part += beta[:, None, None]
    peak = pool_max(list(bn))
    y = np.maximum(peak, dtype(0))

    def backprop(dy):
        through = dy * (peak > 0)  # relu's gradient, on the pooled grid
        taken = np.zeros(y.shape, bool)
        routed = []
        for part in bn:  # the first maximum of each window (in window order), as maxpool2d finds it
            hit = np.equal(part, peak)
            np.greater(hit, taken, out=hit)
            taken |= hit
            routed.append(through * hit)
        beta_grad = through.sum(axis=AXES)
        gamma_grad = sum(np.einsum("nchw,nchw->c", part, view) for part, view in zip(routed, window_views(centered, pool, stride, out_h, out_w))) * inv_std
        # dx = scale * (dbn - mean(dbn) - xhat * mean(dbn * xhat)): the two mean terms everywhere,
        # then scale * dbn where the gradient was routed.
        dx = centered * (-(scale * inv_std * gamma_grad / dtype(count)))[:, None, None]
        dx -= (scale * beta_grad / dtype(count))[:, None, None]
        for part, target in zip(routed, window_views(dx, pool, stride, out_h, out_w)):
            part *= scale[:, None, None]
            target += part
        return dx, {"gamma": gamma_grad, "beta": beta_grad}

    return y, backprop, (mean, var)


def infer(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, pool: int, stride: int) -> np.ndarray:
    """Inference of batchnorm2d (running statistics) -> relu -> maxpool2d, the values the layers give."""
    dtype = x.dtype
    n, c, h, w = x.shape
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    scale = gamma.astype(dtype, copy=False) * (1.0 / np.sqrt(var.astype(dtype, copy=False) + eps)).astype(dtype, copy=False)
    scaled = x - mean.astype(dtype, copy=False)[:, None, None]
    scaled *= scale[:, None, None]
    y = pool_max(window_views(scaled, pool, stride, out_h, out_w))
    y += beta.astype(dtype, copy=False)[:, None, None]
    return np.maximum(y, dtype.type(0), out=y)


def relu_pool(x: np.ndarray, pool: int, stride: int, train: bool):
    """relu -> maxpool2d as one step: the max first, then relu on the pooled grid. The same values
    as the two layers, and in training the same gradient (the first maximum of each window; none
    where the maximum is not positive), bit for bit."""
    n, c, h, w = x.shape
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    peak = pool_max(window_views(x, pool, stride, out_h, out_w))
    y = np.maximum(peak, x.dtype.type(0), out=peak if not train else None)
    if not train:
        return y, None

    def backprop(dy):
        through = dy * (y > 0)
        dx = np.zeros_like(x)
        taken = np.zeros(y.shape, bool)
        for view, target in zip(window_views(x, pool, stride, out_h, out_w), window_views(dx, pool, stride, out_h, out_w)):
            hit = np.equal(view, peak)
            np.greater(hit, taken, out=hit)
            taken |= hit
            if stride >= pool:
                np.multiply(through, hit, out=target)
            else:
                target += through * hit
        return dx

    return y, backprop
