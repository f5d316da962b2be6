"""Batch normalization over the channels of NCHW batches (Ioffe & Szegedy 2015), as torch.nn.BatchNorm2d.

Training normalizes with the batch's own mean and (biased) variance per channel and folds them into
running estimates; inference uses the running estimates, so a sample's output never depends on the
rest of its batch. The running statistics are weights (saved in bundles like any other) listed in
``non_trainable``: forward updates them in place when ``train`` is true and backprop returns no
gradient for them, so optimizers leave them alone.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, PositiveFloat

from cnnkit.layers import Layer, LayerParams


class BatchNorm2D(Layer):
    class Params(LayerParams):
        momentum: float = Field(0.1, gt=0.0, le=1.0, description="weight of each new batch in the running statistics (PyTorch's convention)")
        eps: PositiveFloat = Field(1e-5, description="added to the variance before the square root")

    non_trainable = ("running_mean", "running_var")
    # Not per-sample in training: each sample is normalized with its batch's statistics, and forward
    # updates the running statistics in place, so a model must not split a training batch over threads.
    per_sample_in_training = False

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"batchnorm2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        c = input_shape[0]
        return {"gamma": (c,), "beta": (c,), "running_mean": (c,), "running_var": (c,)}

    def init_weights(self, input_shape, rng):
        c = input_shape[0]
        ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
        return {"gamma": ones, "beta": zeros, "running_mean": zeros.copy(), "running_var": ones.copy()}

    def forward(self, weights, x, train):
        gamma, beta = weights["gamma"], weights["beta"]
        axes = (0, 2, 3)
        dtype = x.dtype.type
        if train:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            mean = x.mean(axis=axes)  # (C,)
            var = x.var(axis=axes)  # biased, used to normalize this batch
            # Running variance is the unbiased estimate, as in PyTorch; with one value per channel
            # there is no unbiased estimate, so the biased one (0) is folded in instead.
            unbiased = var * (count / (count - 1)) if count > 1 else var
            m = self.params.momentum
            weights["running_mean"] *= 1 - m
            weights["running_mean"] += m * mean
            weights["running_var"] *= 1 - m
            weights["running_var"] += m * unbiased
        else:
            mean, var = weights["running_mean"], weights["running_var"]
        inv_std = (1.0 / np.sqrt(var + self.params.eps)).astype(x.dtype, copy=False)  # (C,)
        xhat = (x - mean.astype(x.dtype, copy=False)[:, None, None]) * inv_std[:, None, None]  # (N, C, H, W)
        y = xhat * gamma.astype(x.dtype, copy=False)[:, None, None] + beta.astype(x.dtype, copy=False)[:, None, None]

        def backprop(dy):
            grads = {"gamma": (dy * xhat).sum(axis=axes), "beta": dy.sum(axis=axes)}
            scale = (gamma * inv_std).astype(dy.dtype, copy=False)[:, None, None]  # (C, 1, 1)
            if not train:  # the statistics are constants here
                return dy * scale, grads
            # d/dx of gamma * (x - mean) / std with mean and std taken from the same batch.
            count = dtype(dy.shape[0] * dy.shape[2] * dy.shape[3])
            dx = scale * (dy - grads["beta"][:, None, None] / count - xhat * (grads["gamma"][:, None, None] / count))
            return dx, grads

        return y, backprop

    # Optional export hooks (cnnkit export --format onnx, cnnkit.torch): `g` and `t` are helpers
    # cnnkit passes in, so this file imports neither onnx nor torch. ONNX runs inference only.
    def to_onnx(self, g, x, weights, input_shape):
        names = [g.constant(weights[k], k) for k in ("gamma", "beta", "running_mean", "running_var")]
        return g.node("BatchNormalization", [x, *names], epsilon=self.params.eps)

    def to_torch(self, t, weights, input_shape):
        bn = t.nn.BatchNorm2d(input_shape[0], eps=self.params.eps, momentum=self.params.momentum)
        for name, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"), ("running_var", "running_var")):
            t.set(getattr(bn, name), weights[key])
        return bn

    def from_torch(self, t, module, input_shape):
        return {"gamma": t.array(module.weight), "beta": t.array(module.bias),
                "running_mean": t.array(module.running_mean), "running_var": t.array(module.running_var)}
