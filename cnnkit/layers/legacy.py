"""Layers written for the older contract keep working: ``adapt`` wraps them in the current one.

The older contract (cnnkit 0.1's README, ``cnnkit new-layer`` before the change, cnnkit-extra 0.2.0)
asked for ``weight_shapes`` + ``init_weights`` + ``non_trainable``, a ``forward(weights, x, train)``
with optional keywords found by signature (``input_grad``, ``rng``, ``updates``) and two flags,
``per_sample_in_training`` / ``per_part_in_training``. ``LegacyLayer`` presents such a layer as a
current one: its weights described from the three methods, one context turned back into the
keywords it accepts, the flags into ``batch_coupling``. Draws, outputs and updates are exactly
what the layer gives, so bundles trained before the change stay byte-identical when retrained. A
subclass of a built-in layer that hands ``train`` on to ``super().forward`` gets a context that is
also the bool it expects; the base class keeps ``weight_shapes`` / ``init_weights`` for such
subclasses too.
"""

from __future__ import annotations

import inspect

import numpy as np

from .base import Context, Layer, Shape, Weight

# What only the older contract defines (on the plugin's own classes, not cnnkit's base).
OLD_NAMES = ("weight_shapes", "init_weights", "non_trainable", "per_sample_in_training", "per_part_in_training")
OLD_KEYWORDS = ("input_grad", "rng", "updates")

DEPRECATION = ("written for the older layer contract (weight_shapes/init_weights/non_trainable, forward(weights, x, train, ...), "
               "per_*_in_training): it keeps working through an adapter; the current contract is weights() + forward(weights, x, ctx) "
               "+ batch_coupling (see 'Writing a layer plugin')")


def _defines(cls: type, name: str) -> bool:
    """Whether ``name`` is defined by ``cls`` or a base class below ``Layer`` (not by cnnkit's base)."""
    for klass in cls.__mro__:
        if klass is Layer or klass is object:
            return False
        if name in vars(klass):
            return True
    return False


def is_legacy(cls: type) -> bool:
    """Whether a Layer subclass follows the older contract (an old name defined below Layer, or
    a forward whose third parameter is ``train`` or that takes one of the old keywords)."""
    if any(_defines(cls, name) for name in OLD_NAMES):
        return True
    try:
        names = list(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return False
    return (len(names) > 3 and names[3] == "train") or any(k in names for k in OLD_KEYWORDS)


def batch_coupling(cls: type) -> str:
    """A layer class's batch_coupling; for the older contract, what its two flags meant."""
    if not is_legacy(cls):
        return cls.batch_coupling
    if getattr(cls, "per_sample_in_training", False):
        return "per_sample"
    # The older default: a layer claiming neither flag had its training batches run whole, in one thread.
    return "per_part" if getattr(cls, "per_part_in_training", False) else "whole"


class LegacyTrain(Context):
    """What an older layer gets as ``train``: true or false as the bool it expects, and still the
    whole context when it hands it on to a current-contract class (``super().forward(weights, x,
    train)`` in a subclass of a built-in layer)."""

    __slots__ = ()

    def __init__(self, ctx: Context):
        super().__init__(ctx.train, rng=ctx._rng, seed=ctx._seed, input_grad=ctx.input_grad)
        self.updates = ctx.updates  # what a current-contract base class reports reaches the model

    def __bool__(self) -> bool:
        return self.train


def adapt(layer: Layer) -> Layer:
    """``layer`` itself when it follows the current contract, else a LegacyLayer around it."""
    return LegacyLayer(layer) if is_legacy(type(layer)) else layer


class LegacyLayer(Layer):
    """An older-contract layer behind the current contract (``wrapped`` is the original)."""

    def __init__(self, layer: Layer):
        cls = type(layer)
        self.wrapped = layer
        self.params = layer.params
        self.Params = cls.Params
        self.batch_coupling = batch_coupling(cls)
        self._fixed = tuple(getattr(cls, "non_trainable", ()) or ())
        keywords = inspect.signature(layer.forward).parameters
        self._keywords = {k for k in OLD_KEYWORDS if k in keywords}
        for hook in ("to_onnx", "to_torch", "from_torch"):
            setattr(self, hook, getattr(layer, hook, None))

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.wrapped.output_shape(input_shape)

    def weights(self, input_shape: Shape) -> dict[str, Weight]:
        if not _defines(type(self.wrapped), "weight_shapes"):  # e.g. an older subclass of a built-in layer
            return self.wrapped.weights(input_shape)
        shapes = self.wrapped.weight_shapes(input_shape)
        return {name: Weight(tuple(shape), trainable=name not in self._fixed) for name, shape in shapes.items()}

    def initial_weights(self, input_shape: Shape, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if not _defines(type(self.wrapped), "init_weights"):
            return self.wrapped.initial_weights(input_shape, rng)
        return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in self.wrapped.init_weights(input_shape, rng).items()}

    def forward(self, weights, x, ctx: Context):
        train = LegacyTrain(ctx)
        kwargs = {}
        if "input_grad" in self._keywords and not ctx.input_grad:
            kwargs["input_grad"] = False
        if "rng" in self._keywords and ctx.train:
            kwargs["rng"] = train.rng
        if "updates" in self._keywords and ctx.train:
            kwargs["updates"] = ctx.updates  # the older layer fills the dict the context reports
        try:
            return self.wrapped.forward(weights, x, train, **kwargs)
        finally:
            ctx.rng_used = ctx.rng_used or train.rng_used
