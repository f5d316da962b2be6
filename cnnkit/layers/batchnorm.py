"""Batch normalization over the channels of NCHW batches (Ioffe & Szegedy 2015), as torch.nn.BatchNorm2d.

Training normalizes with the batch's own mean and (biased) variance per channel and folds them into
running estimates; inference uses the running estimates, so a sample's output never depends on the
rest of its batch. The running statistics are weights (saved in bundles like any other) that are not
trainable: backprop returns no gradient for them, so optimizers leave them alone.

Split over threads (``batch_coupling = "per_part"``), each part is normalized with its own
statistics, as data-parallel training without synchronised batch norm does; the new running
statistics go to ``ctx.update`` and the model averages the parts' values (see cnnkit.layers.base).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, PositiveFloat

from .base import Layer, LayerParams, Weight
from .kernels import bn_relu_pool as kernel


class BatchNorm2D(Layer):
    class Params(LayerParams):
        momentum: float = Field(0.1, gt=0.0, le=1.0, description="weight of each new batch in the running statistics (PyTorch's convention)")
        eps: PositiveFloat = Field(1e-5, description="added to the variance before the square root")

    batch_coupling = "per_part"

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"batchnorm2d expects an input of shape (channels, height, width). Received: input_shape={list(input_shape)}")
        return tuple(input_shape)

    def weights(self, input_shape):
        c = (input_shape[0],)
        return {"gamma": Weight(c, 1.0), "beta": Weight(c, 0.0),
                "running_mean": Weight(c, 0.0, trainable=False), "running_var": Weight(c, 1.0, trainable=False)}

    def forward(self, weights, x, ctx):
        train = ctx.train
        axes = (0, 2, 3)
        x = np.ascontiguousarray(x)  # a cropped convolution output: one copy makes the passes below twice as fast
        dtype = x.dtype.type
        count = x.shape[0] * x.shape[2] * x.shape[3]
        gamma = weights["gamma"].astype(x.dtype, copy=False)
        if train and count:
            mean, centered, var = kernel.batch_statistics(x)  # var biased: normalizes this batch
            for name, value in kernel.running_statistics(weights, mean, var, count, self.params.momentum).items():
                ctx.update(name, value)
        else:
            mean, var = weights["running_mean"].astype(x.dtype, copy=False), weights["running_var"].astype(x.dtype, copy=False)
            centered = kernel.per_channel(x, np.ones_like(mean), -mean)
        inv_std = (1.0 / np.sqrt(var + self.params.eps)).astype(x.dtype, copy=False)  # (C,)
        scale = gamma * inv_std  # (C,): y = centered * scale + beta
        y = kernel.per_channel(centered, scale, weights["beta"].astype(x.dtype, copy=False))

        def backprop(dy):
            beta_grad = dy.sum(axis=axes)
            gamma_grad = np.einsum("nchw,nchw->c", dy, centered) * inv_std  # sum of dy * xhat
            dx = kernel.per_channel(dy, scale.astype(dy.dtype, copy=False))
            if train and count:
                # d/dx of gamma * (x - mean) / std with mean and std taken from the same batch:
                # scale * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = centered * inv_std.
                n = dtype(count)
                dx -= kernel.per_channel(centered, scale * inv_std * gamma_grad / n)
                dx.reshape(*dx.shape[:2], -1)[...] -= (scale * beta_grad / n)[:, None]
            return dx, {"gamma": gamma_grad, "beta": beta_grad}

        return y, backprop

    # -- export hooks (cnnkit.export): ONNX BatchNormalization (inference); torch BatchNorm2d

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
