"""The layer contract every built-in and plugin layer implements.

A layer is a small class with four parts, all pure functions of its params:

- ``Params``: a pydantic model of its spec fields (unknown fields are rejected, booleans are not
  numbers). The spec validator and ``cnnkit schema`` both read it.
- ``output_shape(input_shape)``: the per-sample output shape, computed before any array exists.
  Raise ``ValueError("what is wrong. Received: ...")`` when the input shape cannot work.
- ``weight_shapes(input_shape)`` / ``init_weights(input_shape, rng)``: named arrays. Names listed in
  ``non_trainable`` (e.g. batch-norm running statistics) are learned state that ``forward`` updates
  when ``train`` is true (see ``updates`` below); backprop returns no gradient for them, so
  optimizers skip them.
- ``forward(weights, x, train)``: returns ``(y, backprop)`` where ``backprop(dy)`` returns
  ``(dx, {weight_name: gradient})``. All state backward needs lives in that closure.

One layer object serves every thread of a split batch at once: keep no per-call state on ``self``
(everything a call needs lives in its locals and the backprop closure).

Optional keywords of ``forward``. The model passes each only to a layer whose ``forward`` accepts
it (detected once from the signature), so layers without them keep working unchanged:

- ``input_grad`` (default True): called with ``input_grad=False`` when the layer is the model's
  first layer with weights; its ``backprop`` may then return ``None`` for dx and skip that work
  (the gradient of the input data is never used).
- ``rng`` (default None): in training, a ``numpy.random.Generator`` for layers that draw random
  numbers (dropout). The model derives it as ``np.random.default_rng([train.seed, epoch, step,
  layer_index, part_index])`` from the ``key=(epoch, step)`` the training loop passes to
  ``Model.forward`` (part_index: which thread's part of a split batch, 0 when not split), so the
  same spec, seed, data and thread count give the same draws, and so a byte-identical bundle.
  Draw only from this generator, never from global state. In inference no generator is passed
  (``rng`` is None) and the layer must be deterministic.
- ``updates`` (default None): in training, a dict to fill with the new values of ``non_trainable``
  weights (``updates["running_mean"] = ...``) instead of writing them in place. The model applies
  them once every part of the batch has finished: the parts' values weighted by their sample
  counts, summed in part order (for a running average this folds in the mean of the parts'
  statistics). So no thread writes a weight another thread reads, and the result does not depend
  on thread timing. Called without ``updates`` (directly, or an older plugin), a layer may update
  its state in place as before.

Splitting a training batch over threads. A model splits a training batch only if every layer
declares one of:

- ``per_sample_in_training = True``: in training, too, each sample's output and its share of the
  gradients depend on that sample (and its generator) alone, and forward changes no shared state.
  The parts' gradients sum to the whole batch's (``check_layer`` checks the claim).
- ``per_part_in_training = True``: the layer uses statistics of the batch it is given (batch norm).
  Run on a part, it uses that part's statistics, as data-parallel training without synchronised
  batch norm does (PyTorch's DataParallel/DDP without SyncBatchNorm), and it reports state through
  ``updates`` (required when it has ``non_trainable`` weights). Outputs then depend on how the batch
  is split, i.e. on the thread count, which determinism already requires to be fixed.

Layers declaring neither (e.g. an older batch norm that updates its statistics in place) keep
working: the model runs their training batches whole, in one thread. In inference every layer
must be per-sample anyway (``check_layer`` checks it), so inference batches always split.

Arrays are batched: ``x`` is ``(N, *input_shape)``. Shapes passed to the methods exclude N.

Optional export hooks (``cnnkit export --format onnx``, ``cnnkit.torch``). Each receives a helper
object from the exporter, so a layer file never imports onnx or torch itself; a layer without a
hook still trains and predicts, and exporting it fails with a one-line error naming the layer.

- ``to_onnx(g, x, weights, input_shape) -> str``: add the layer's ONNX node(s) for inference.
  ``x`` is the name of the input tensor (N, *input_shape); return the name of the output.
  ``g.constant(array, "kernel")`` adds a weight, ``g.node("Conv", [x, k], kernel_shape=[3, 3])``
  adds one node and returns its output's name (see ``cnnkit.export.onnx.OnnxGraph``; opset 17).
- ``to_torch(t, weights, input_shape) -> torch.nn.Module``: an equivalent module holding copies
  of the weights in torch's layouts (``t.nn`` is ``torch.nn``, ``t.set(param, array)`` copies an
  array into a parameter or buffer; see ``cnnkit.export.torch.TorchHelper``).
- ``from_torch(t, module, input_shape) -> {weight_name: array}``: the inverse, the weights of the
  module ``to_torch`` built, in cnnkit's layouts (``t.array(tensor)`` copies a tensor out). Only
  layers with weights need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

Shape = tuple[int, ...]
Grads = dict[str, np.ndarray]
Backprop = Callable[[np.ndarray], tuple[np.ndarray, Grads]]


class LayerParams(BaseModel):
    """Base for a layer's parameter model: strict types, unknown fields rejected, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Layer:
    """Base class of every layer; subclasses override what they need (see the module docstring)."""

    Params: ClassVar[type[LayerParams]] = LayerParams
    non_trainable: ClassVar[tuple[str, ...]] = ()
    per_sample_in_training: ClassVar[bool] = False
    per_part_in_training: ClassVar[bool] = False
    # Optional export hooks (see the module docstring): None means "this layer cannot be exported".
    to_onnx: ClassVar[Callable | None] = None
    to_torch: ClassVar[Callable | None] = None
    from_torch: ClassVar[Callable | None] = None

    def __init__(self, params: LayerParams | None = None, **fields):
        if params is None:
            params = self.Params(**fields)
        elif fields:
            raise TypeError("pass either a Params instance or keyword fields, not both")
        self.params = params

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({fields})"

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {}

    def init_weights(self, input_shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def forward(self, weights: dict[str, np.ndarray], x: np.ndarray, train: bool) -> tuple[np.ndarray, Backprop]:
        # Optional keywords (input_grad, rng, updates) are added by the layers that use them.
        raise NotImplementedError(f"{type(self).__name__}.forward")


def init_kernel(rng: np.random.Generator, shape: Shape, fan_in: int, fan_out: int, std: float | None = None) -> np.ndarray:
    """A kernel drawn from N(0, std^2) when ``std`` is given, else Glorot-uniform (Keras' default):
    U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    if std is not None:
        return (rng.standard_normal(shape) * std).astype(np.float32)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)
