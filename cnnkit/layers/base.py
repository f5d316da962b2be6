"""The layer contract every built-in and plugin layer implements.

A layer is a small class with four parts, all pure functions of its params:

- ``Params``: a pydantic model of its spec fields (unknown fields are rejected, booleans are not
  numbers). The spec validator and ``cnnkit schema`` both read it.
- ``output_shape(input_shape)``: the per-sample output shape, computed before any array exists.
  Raise ``ValueError("what is wrong. Received: ...")`` when the input shape cannot work.
- ``weight_shapes(input_shape)`` / ``init_weights(input_shape, rng)``: named arrays. Names listed in
  ``non_trainable`` (e.g. batch-norm running statistics) are learned state that ``forward`` updates
  in place when ``train`` is true; backprop returns no gradient for them, so optimizers skip them.
- ``forward(weights, x, train)``: returns ``(y, backprop)`` where ``backprop(dy)`` returns
  ``(dx, {weight_name: gradient})``. All state backward needs lives in that closure.

Optional: a ``forward`` that also accepts a keyword ``input_grad`` (default True) is called with
``input_grad=False`` when it is the model's first layer with weights; its ``backprop`` may then
return ``None`` for dx and skip that work (the gradient of the input data is never used). Layers
without the keyword are called as above, so existing plugins keep working.

Optional: ``per_sample_in_training = True`` says that in training, too, each sample's output and
its share of the gradients depend on that sample alone, and forward changes no shared state. A
model whose layers all say so may split a training batch over threads and sum the parts'
gradients (``check_layer`` checks the claim). Leave it False for layers that use batch
statistics (batch norm). In inference every layer must be per-sample anyway (``check_layer``
checks it), so inference batches always split.

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

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Layer:
    """Base class of every layer; subclasses override what they need (see the module docstring)."""

    Params: ClassVar[type[LayerParams]] = LayerParams
    non_trainable: ClassVar[tuple[str, ...]] = ()
    per_sample_in_training: ClassVar[bool] = False
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
        raise NotImplementedError(f"{type(self).__name__}.forward")


def init_kernel(rng: np.random.Generator, shape: Shape, fan_in: int, fan_out: int, std: float | None = None) -> np.ndarray:
    """A kernel drawn from N(0, std^2) when ``std`` is given, else Glorot-uniform (Keras' default):
    U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    if std is not None:
        return (rng.standard_normal(shape) * std).astype(np.float32)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)
