"""The layer contract every built-in and plugin layer implements.

A layer is a small class; everything it does is a pure function of its params and its inputs:

- ``Params``: a pydantic model of its spec fields (unknown fields are rejected, booleans are not
  numbers). The spec validator and ``cnnkit schema`` both read it.
- ``output_shape(input_shape)``: the per-sample output shape, computed before any array exists.
  Raise ``ValueError("what is wrong. Received: ...")`` when the input shape cannot work.
- ``weights(input_shape)``: the layer's named weights, each a ``Weight(shape, init, trainable)``.
  ``init`` is a number (every value) or a function ``(rng, shape) -> array`` (see ``glorot_uniform``
  and ``normal``); the runtime calls them in the order given, from one generator per layer.
  ``trainable=False`` marks learned state that is not trained by gradients (batch-norm running
  statistics): backprop returns no gradient for it, and forward reports its new value with
  ``ctx.update`` in training.
- ``forward(weights, x, ctx)``: ``x`` is a batch ``(N, *input_shape)``; returns ``(y, backprop)``
  where ``backprop(dy)`` returns ``(dx, {weight_name: gradient})``. All state backprop needs lives
  in that closure: one layer object serves every thread at once, so keep nothing per call on ``self``.
- ``batch_coupling``: how a training batch may be split over threads (below).

The context ``ctx`` (a ``Context``) says what else a pass needs:

- ``ctx.train``: training (True) or inference (False).
- ``ctx.rng``: in training, a ``numpy.random.Generator`` for layers that draw random numbers
  (dropout), derived from (train.seed, epoch, step, layer index, batch part), so a run is
  reproducible. Draw only from it, never from global state. In inference it is None, and the layer
  must be deterministic.
- ``ctx.input_grad``: False when nothing needs the input's gradient (the model's first layer with
  weights); backprop may then return None for dx and skip that work.
- ``ctx.update(name, value)``: in training, the new value of a ``trainable=False`` weight. The model
  writes it once every part of the batch has finished (several parts' values weighted by their sample
  counts, summed in part order), so no thread writes what another reads. Never write weights in place.

``batch_coupling`` — may a model split a training batch over threads through this layer?

- ``"per_sample"`` (the default): in training, too, each sample's output and its share of the weight
  gradients depend on that sample (and its generator) alone. Parts' gradients sum to the batch's.
- ``"per_part"``: the layer uses statistics of the batch it is given (batch norm). Run on a part, it
  uses that part's statistics, as data-parallel training without synchronised batch norm does
  (PyTorch's DDP without SyncBatchNorm); outputs then depend on the thread count, which determinism
  already requires to be fixed.
- ``"whole"``: never split a training batch through this layer (it runs in one thread).

In inference every layer must treat samples independently, so inference batches always split.
``cnnkit check-layer`` (``cnnkit.testing.check_layer``) checks every claim above.

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

Layers written for the contract before this one (``weight_shapes`` / ``init_weights`` /
``non_trainable``, ``forward(weights, x, train, *, input_grad, rng, updates)``,
``per_sample_in_training`` / ``per_part_in_training``) keep working through ``cnnkit.layers.legacy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from ..params import StrictParams

Shape = tuple[int, ...]
Grads = dict[str, np.ndarray]
Backprop = Callable[[np.ndarray], tuple[np.ndarray | None, Grads]]
BatchCoupling = Literal["per_sample", "per_part", "whole"]
BATCH_COUPLINGS: tuple[str, ...] = ("per_sample", "per_part", "whole")
Init = Callable[[np.random.Generator, Shape], np.ndarray]


class LayerParams(StrictParams):
    """Base for a layer's parameter model: strict types, unknown fields rejected, finite numbers, immutable."""


@dataclass(frozen=True)
class Weight:
    """One named weight of a layer: its shape, how it starts, and whether gradients train it."""

    shape: Shape
    init: float | Init = 0.0  # a constant, or a draw (rng, shape) -> array
    trainable: bool = True

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        """The starting value, float32 (a constant draws nothing from ``rng``)."""
        if callable(self.init):
            return np.ascontiguousarray(self.init(rng, tuple(self.shape)), dtype=np.float32)
        return np.full(self.shape, self.init, np.float32)


class Context:
    """What a forward pass knows besides its weights and input (see the module docstring).

    ``Context(train=True, rng=np.random.default_rng(0))`` for a direct call in training,
    ``Context()`` for inference. The model builds the generator lazily from ``seed`` (a list of
    ints), so layers that draw nothing cost nothing. ``updates`` holds what ``update`` reported.
    """

    __slots__ = ("train", "input_grad", "updates", "_rng", "_seed", "rng_used")

    def __init__(self, train: bool = False, *, rng: np.random.Generator | None = None, seed: list[int] | None = None, input_grad: bool = True):
        self.train = bool(train)
        self.input_grad = bool(input_grad)
        self.updates: dict[str, np.ndarray] = {}
        self._rng, self._seed = rng, seed
        self.rng_used = False  # whether the layer asked for a generator (the conformance kit reads it)

    @property
    def rng(self) -> np.random.Generator | None:
        if not self.train:
            return None
        self.rng_used = True
        if self._rng is None and self._seed is not None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    def update(self, name: str, value: np.ndarray) -> None:
        """Report the new value of the non-trainable weight ``name`` (training only)."""
        if not self.train:
            raise ValueError(f"ctx.update({name!r}, ...) in inference: only training may change a layer's state")
        self.updates[name] = value


class Layer:
    """Base class of every layer; subclasses override what they need (see the module docstring)."""

    Params: ClassVar[type[LayerParams]] = LayerParams
    batch_coupling: ClassVar[BatchCoupling] = "per_sample"
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

    def weights(self, input_shape: Shape) -> dict[str, Weight]:
        return {}

    def forward(self, weights: dict[str, np.ndarray], x: np.ndarray, ctx: Context) -> tuple[np.ndarray, Backprop]:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    # -- used by the runtime, not part of what a layer defines -------------------------------------

    def initial_weights(self, input_shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Every weight's starting value, drawn in declaration order from ``rng``."""
        return {name: w.initial(rng) for name, w in self.weights(input_shape).items()}

    # The older contract's names, derived, for older subclasses of a built-in layer that call them.
    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {name: tuple(w.shape) for name, w in self.weights(input_shape).items()}

    def init_weights(self, input_shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.initial_weights(input_shape, rng)


def glorot_uniform(fan_in: int, fan_out: int) -> Init:
    """Keras' default kernel init: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return lambda rng, shape: rng.uniform(-limit, limit, size=shape).astype(np.float32)


def normal(std: float) -> Init:
    """N(0, std^2)."""
    return lambda rng, shape: (rng.standard_normal(shape) * std).astype(np.float32)


def kernel_init(fan_in: int, fan_out: int, std: float | None = None) -> Init:
    """``normal(std)`` when ``std`` is given, else ``glorot_uniform(fan_in, fan_out)``."""
    return normal(std) if std is not None else glorot_uniform(fan_in, fan_out)


def init_kernel(rng: np.random.Generator, shape: Shape, fan_in: int, fan_out: int, std: float | None = None) -> np.ndarray:
    """A kernel drawn at once (the older contract's helper; ``kernel_init`` is its description form)."""
    return kernel_init(fan_in, fan_out, std)(rng, tuple(shape))
