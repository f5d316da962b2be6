"""Batch norm -> relu -> max pool as one step, with the relu after the pooling.

Run as three layers, a training step makes about ten passes over the full-size activations forward
and twenty backward, many of them strided (a 2x2 window's elements are every other value of a
row). Here batch norm's output is computed where the windows reach, window element by window
element (one contiguous copy when the windows tile the input, as the usual 2x2 ones do), pooled,
and only then relu'd: max and relu commute, so the values are the three layers' bit for bit.
Backward sends each window's gradient to its first maximum (in window order, as maxpool2d and
PyTorch do; nowhere when relu cut it), so batch norm's sums over the gradient are sums over the
windows, and dx is written once.

``batch_statistics``, ``running_statistics`` and ``per_channel`` are batch norm's own arithmetic,
shared with ``cnnkit.layers.batchnorm`` so both paths give the same numbers.
"""

from __future__ import annotations

import numpy as np

from .window_max import maximum_of, window_max

AXES = (0, 2, 3)


def batch_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel mean, x - mean (N, C, H, W) and biased variance of a contiguous batch."""
    n, c, h, w = x.shape
    mean = x.mean(axis=AXES)  # (C,)
    # (N, C, H*W) views: numpy runs a channel's broadcast along whole planes, not rows of W (faster).
    centered = (x.reshape(n, c, h * w) - mean[:, None]).reshape(x.shape)
    var = np.einsum("nchw,nchw->c", centered, centered) / x.dtype.type(n * h * w)
    return mean, centered, var


def per_channel(a: np.ndarray, scale: np.ndarray, shift: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """a * scale (+ shift), per channel of a (..., C, H, W), through (-1, C, H*W) views."""
    shape = a.shape
    flat = a.reshape(-1, shape[-3], shape[-2] * shape[-1])
    result = np.multiply(flat, scale[:, None], out=None if out is None else out.reshape(flat.shape))
    if shift is not None:
        result += shift[:, None]
    return result.reshape(shape)


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


def windows(a: np.ndarray, k: int, out_h: int, out_w: int) -> np.ndarray:
    """Non-overlapping k x k windows (stride k) of a (N, C, H, W), window element by window element:
    a contiguous (k*k, N, C, Ho, Wo) copy. One strided pass here saves one in every pass after it
    (strided passes over NCHW rows run 2-4x slower than contiguous ones)."""
    n, c = a.shape[:2]
    tiled = a[:, :, : k * out_h, : k * out_w].reshape(n, c, out_h, k, out_w, k)
    out = np.empty((k, k, n, c, out_h, out_w), a.dtype)
    np.copyto(out, tiled.transpose(3, 5, 0, 1, 2, 4))
    return out.reshape(k * k, n, c, out_h, out_w)


def _first_maxima(parts, peak: np.ndarray, through: np.ndarray) -> list[np.ndarray]:
    """For each window element, ``through`` where it is the first (in window order) equal to the
    window's maximum ``peak``, else 0: where maxpool2d's backprop sends the gradient."""
    taken = np.zeros(peak.shape, bool)
    routed = []
    for part in parts:
        hit = np.equal(part, peak)
        np.greater(hit, taken, out=hit)  # hit and not taken
        taken |= hit
        routed.append(through * hit)
    return routed


def train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, pool: int, stride: int):
    """Training forward of batchnorm2d -> relu -> maxpool2d on x (N, C, H, W), N*H*W >= 1.

    Returns (y, backprop, (mean, var)): y is what the three layers give, bit for bit; backprop(dy)
    returns (dx, {"gamma": ..., "beta": ...}); mean and var are the batch's, for the running
    statistics. Windows that tile the input (stride = pool size, the usual 2x2) are worked on as
    contiguous copies (``windows``); others through strided views."""
    x = np.ascontiguousarray(x)  # a cropped view: one copy makes every pass below faster
    dtype = x.dtype.type
    n, c, h, w = x.shape
    count = n * h * w
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    mean, centered, var = batch_statistics(x)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    gamma, beta = gamma.astype(x.dtype, copy=False), beta.astype(x.dtype, copy=False)
    scale = gamma * inv_std
    tiled = pool == stride
    # x - mean at each window element, and batch norm's output there (only where windows reach).
    parts = windows(centered, pool, out_h, out_w) if tiled else window_views(centered, pool, stride, out_h, out_w)
    if tiled:
        bn = per_channel(parts, scale, beta)
    else:
        bn = np.empty((pool * pool, n, c, out_h, out_w), x.dtype)
        for out, part in zip(bn, parts):
            per_channel(part, scale, beta, out=out)
    peak = maximum_of(bn)  # over the window elements
    y = np.maximum(peak, dtype(0))
    margins = tiled and (h > pool * out_h or w > pool * out_w)  # rows or columns no window reaches

    def backprop(dy):
        through = dy * (peak > 0)  # relu's gradient, on the pooled grid
        routed = _first_maxima(bn, peak, through)
        beta_grad = through.sum(axis=AXES)
        gamma_grad = sum(np.einsum("nchw,nchw->c", r, part) for r, part in zip(routed, parts)) * inv_std
        # dx = scale * (dbn - mean(dbn) - xhat * mean(dbn * xhat)): the two mean terms everywhere,
        # then scale * dbn where the gradient was routed.
        k1, k2 = -(scale * inv_std * gamma_grad / dtype(count)), -(scale * beta_grad / dtype(count))
        if not tiled:
            dx = per_channel(centered, k1, k2)
            for r, target in zip(routed, window_views(dx, pool, stride, out_h, out_w)):
                target += per_channel(r, scale)
            return dx, {"gamma": gamma_grad, "beta": beta_grad}
        dx = per_channel(centered, k1, k2) if margins else np.empty_like(x)
        # Window element by window element: scale * dbn - the mean terms, into a quarter-size buffer
        # (it stays in cache), then to its place in dx, one strided copy each (about twice as fast
        # as one copy through a 6-D transpose, whose innermost run is pool long).
        d_part = np.empty(parts.shape[1:], x.dtype)
        for r, part, target in zip(routed, parts, window_views(dx, pool, pool, out_h, out_w)):
            per_channel(part, k1, k2, out=d_part)
            d_part += per_channel(r, scale)
            target[...] = d_part
        return dx, {"gamma": gamma_grad, "beta": beta_grad}

    if tiled and not margins:
        centered = None  # the windows' copy holds all backprop needs: free the full-size array

    return y, backprop, (mean, var)


# Training parts under SMALL_BATCH samples run batchnorm2d, relu and maxpool2d as themselves
# (cnnkit.runtime.plan): this step's fixed costs outweighed its savings there (best net, 2 threads:
# batch 1 trained at 235 img/s fused, 336 unfused; batch 32, whose parts hold 16, 968 and 1,186).
SMALL_BATCH = 32


def infer(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, pool: int, stride: int) -> np.ndarray:
    """Inference of batchnorm2d (running statistics) -> relu -> maxpool2d, the values the layers give."""
    dtype = x.dtype
    n, c, h, w = x.shape
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    scale = gamma.astype(dtype, copy=False) * (1.0 / np.sqrt(var.astype(dtype, copy=False) + eps)).astype(dtype, copy=False)
    scaled = x - mean.astype(dtype, copy=False)[:, None, None]
    scaled *= scale[:, None, None]
    y = window_max(scaled, pool, stride, out_h, out_w)
    y += beta.astype(dtype, copy=False)[:, None, None]
    return np.maximum(y, dtype.type(0), out=y)


def relu_pool(x: np.ndarray, pool: int, stride: int, train: bool):
    """relu -> maxpool2d as one step: the max first, then relu on the pooled grid. The same values
    as the two layers, and in training the same gradient (the first maximum of each window; none
    where the maximum is not positive), bit for bit."""
    n, c, h, w = x.shape
    out_h, out_w = (h - pool) // stride + 1, (w - pool) // stride + 1
    peak = window_max(x, pool, stride, out_h, out_w)
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
