"""How a model runs its layers: one step per layer, or a run of built-in layers as one fused step.

A fused step computes what its layers compute, with fewer passes over memory:

- ``relu_pool`` (training and inference): relu -> maxpool2d, pooled first (the same values and, in
  training, the same gradient, bit for bit).
- ``bn_relu_pool`` (training and inference): batchnorm2d -> relu -> maxpool2d, the pooling before
  the shift and the relu (the same values bit for bit; a gradient equal to the layers' up to
  rounding). See ``cnnkit.layers.kernels.bn_relu_pool``.
- ``conv_bn`` (inference only): conv2d -> batchnorm2d folded into one convolution
  (``cnnkit.layers.kernels.fold``), followed by ``relu_pool`` when relu -> maxpool2d come next.
- ``conv_bn_relu_pool`` and ``conv_relu_pool`` (inference only): a 3x3 convolution on the Winograd
  path (batch norm folded in, or none), relu and a 2x2 stride-2 max pool in one kernel call, pooled
  before its output leaves the kernel's tiles (``Conv2D.forward_relu_pool``, which takes Winograd
  F(2x2, 3x3) or F(4x4, 3x3) by the layer's shape: with F(2x2) the values of ``conv_bn`` (or the
  convolution) then ``relu_pool`` bit for bit, with F(4x4) to rounding).

Only the built-in classes themselves fuse (a subclass or a plugin layer runs as itself); any
pool size and stride maxpool2d accepts fuses. ``CNNKIT_FUSE=0`` runs every layer as itself: the
plain reference path, which tests compare the fused one with. Inference also keeps each folded
kernel while its sources are unchanged (``cnnkit.layers.kernels.derived``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..layers.activations import ReLU
from ..layers.base import Context
from ..layers.batchnorm import BatchNorm2D
from ..layers.conv import Conv2D
from ..layers.kernels import bn_relu_pool, fold
from ..layers.kernels.derived import Derived
from ..layers.pool import MaxPool2D
from . import tuning

INFERENCE = Context(False)
BN_NAMES = ("gamma", "beta", "running_mean", "running_var")
_folded = Derived()  # inference: each folded (kernel, bias), while its sources are unchanged
# Layer indices -> their gradients by weight name, for the model to name ("3.kernel").
StepGrads = list[tuple[int, dict[str, np.ndarray]]]


@dataclass(frozen=True)
class Step:
    """Layers ``indices`` (consecutive) run as ``kind``; ``conv`` is the convolution a ``conv_*``
    step runs: with batch norm folded in, the spec's convolution with a bias; else the spec's own."""

    kind: str
    indices: tuple[int, ...]
    conv: Conv2D | None = None

    @property
    def label(self) -> str:
        return f"{self.indices[0]}" if len(self.indices) == 1 else f"{self.indices[0]}-{self.indices[-1]}"


def _is(layer, cls) -> bool:
    return type(layer) is cls


def plan(layers: list, train: bool) -> list[Step]:
    """The steps that run ``layers`` (ResolvedLayer objects), in order."""
    steps: list[Step] = []
    kinds = [type(r.layer) for r in layers]
    fuse = tuning.fusion_enabled()
    i = 0
    while i < len(layers):
        here = kinds[i : i + 4]
        if fuse and not train and _pooled_conv(layers, i, here):
            if here[1] is BatchNorm2D:
                steps.append(Step("conv_bn_relu_pool", (i, i + 1, i + 2, i + 3), _with_bias(layers[i].layer)))
                i += 4
            else:
                steps.append(Step("conv_relu_pool", (i, i + 1, i + 2), layers[i].layer))
                i += 3
        elif fuse and not train and here[:2] == [Conv2D, BatchNorm2D]:
            steps.append(Step("conv_bn", (i, i + 1), _with_bias(layers[i].layer)))
            i += 2
        elif fuse and here[:3] == [BatchNorm2D, ReLU, MaxPool2D]:
            steps.append(Step("bn_relu_pool", (i, i + 1, i + 2)))
            i += 3
        elif fuse and here[:2] == [ReLU, MaxPool2D]:
            steps.append(Step("relu_pool", (i, i + 1)))
            i += 2
        else:
            steps.append(Step("layer", (i,)))
            i += 1
    return steps


def _with_bias(conv: Conv2D) -> Conv2D:
    """The convolution a batch norm folds into: the same one with a bias."""
    return Conv2D(conv.params.model_copy(update={"use_bias": True}))


def _pooled_conv(layers: list, i: int, kinds: list) -> bool:
    """Whether layers i... are conv2d [-> batchnorm2d] -> relu -> maxpool2d(2, stride 2) with a
    convolution ``Conv2D.fuses_relu_pool`` takes."""
    tail = kinds[1:4] if kinds[1:2] == [BatchNorm2D] else kinds[1:3]
    if kinds[:1] != [Conv2D] or tail[-2:] != [ReLU, MaxPool2D]:
        return False
    pool = layers[i + len(tail)].layer.params
    return pool.pool_size == 2 and pool.stride == 2 and layers[i].layer.fuses_relu_pool(layers[i].input_shape)


def _folded_conv(layers: list, weights: list[dict], first: int) -> dict[str, np.ndarray]:
    """The kernel and bias of convolution ``first`` with the batch norm after it folded in (kept
    while their sources are unchanged)."""
    conv_w, bn_w, eps = weights[first], weights[first + 1], layers[first + 1].layer.params.eps
    kernel, bias = _folded.get(lambda k, b, *stats: fold.fold_batchnorm(k, b, dict(zip(BN_NAMES, stats)), eps),
                               conv_w["kernel"], conv_w.get("bias"), *(bn_w[name] for name in BN_NAMES))
    return {"kernel": kernel, "bias": bias}


def run(layers: list, weights: list[dict], step: Step, x: np.ndarray, ctx_for: Callable[[int], Context] | None, forwards: list[Callable]):
    """Run one step on x. ``ctx_for(i)`` gives layer i's training context; None means inference.
    ``forwards[i]`` runs layer i as itself (the model's guarded forward, cnnkit.runtime.guard); a
    fused step runs built-in kernels, which the guard does not wrap.

    Returns (y, backprop, updates): backprop(dy) -> (dx, [(layer index, grads)]) in training (None
    in inference); updates maps layer index -> the state it reported."""
    train = ctx_for is not None
    first = step.indices[0]
    if step.kind == "layer" or x.shape[0] == 0 or (train and step.kind == "bn_relu_pool" and x.shape[0] < bn_relu_pool.SMALL_BATCH):
        # An empty batch has no statistics to fuse; a training part under SMALL_BATCH samples runs
        # its layers as themselves (measured: the fused step's fixed costs outweighed its savings there).
        return _run_layers(forwards, weights, step.indices, x, ctx_for)
    if step.kind == "conv_bn":
        return step.conv.forward(_folded_conv(layers, weights, first), x, INFERENCE)[0], None, {}
    if step.kind == "conv_bn_relu_pool":
        return step.conv.forward_relu_pool(_folded_conv(layers, weights, first), x), None, {}
    if step.kind == "conv_relu_pool":
        return step.conv.forward_relu_pool(weights[first], x), None, {}
    pool = layers[step.indices[-1]].layer.params
    if step.kind == "relu_pool":
        y, backprop = bn_relu_pool.relu_pool(x, pool.pool_size, pool.stride, train)
        return y, (lambda dy: (backprop(dy), [])) if train else None, {}
    bn, w = layers[first].layer.params, weights[first]
    if not train:
        return bn_relu_pool.infer(x, w["running_mean"], w["running_var"], w["gamma"], w["beta"], bn.eps, pool.pool_size, pool.stride), None, {}
    y, backprop, (mean, var) = bn_relu_pool.train(x, w["gamma"], w["beta"], bn.eps, pool.pool_size, pool.stride)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    updates = {first: bn_relu_pool.running_statistics(w, mean, var, count, bn.momentum)}

    def step_backprop(dy):
        dx, grads = backprop(dy)
        return dx, [(first, grads)]

    return y, step_backprop, updates


def _run_layers(forwards, weights, indices, x, ctx_for):
    backprops, updates = [], {}
    for i in indices:
        ctx = ctx_for(i) if ctx_for is not None else INFERENCE
        x, bp = forwards[i](weights[i], x, ctx)
        backprops.append((i, bp))
        if ctx.updates:
            updates[i] = ctx.updates
    if ctx_for is None:
        return x, None, {}

    def backprop(dy):
        grads = []
        for i, bp in reversed(backprops):
            dy, layer_grads = bp(dy)
            grads.append((i, layer_grads))
        return dy, grads

    return x, backprop, updates
