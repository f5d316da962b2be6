"""The layer contract, checked at every step: what a layer's forward and backprop return is compared
with what the layer declared, and an exception raised inside a layer's code names the layer.

A model runs each layer through its ``LayerGuard`` (``Model._forwards``). After forward: the output is
an array of shape (N, *output_shape) in the input's dtype, and ``ctx.update`` reported only
non-trainable weights, each of its weight's shape. After backprop (training): the input gradient is
None only where ``ctx.input_grad`` was False and otherwise has the input's shape, and there is one
gradient per trainable weight, of that weight's shape. All of it compares tuples and dtypes that
numpy already holds: no array is read, so the cost is a fixed few microseconds per layer and step,
whatever the batch (docs/plugins-guard.md has the measurements).

A failure is one line naming the layer index, its type (qualified for a plugin), its distribution
and version, and who has the bug: a plugin's author, or cnnkit for a built-in layer. An exception
raised inside a layer's code (forward or backprop) is wrapped the same way, with the cause chained,
so a plugin bug is never reported as "internal error" or a numpy message naming no layer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..errors import CnnkitError, LayerError
from ..layers.base import Context, Layer, Shape

_ndarray = np.ndarray  # looked up once: the checks run for every layer at every step


class LayerGuard:
    """One layer of a model with its declared shapes; ``forward`` runs the layer and checks what it returns."""

    __slots__ = ("_forward", "input_shape", "output_shape", "trainable", "_trainable_names", "state", "where", "culprit", "builtin")

    def __init__(self, layer: Layer, input_shape: Shape, output_shape: Shape, where: str, culprit: str, builtin: bool = False):
        described = layer.weights(tuple(input_shape))
        self._forward = layer.forward
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.trainable = {name: tuple(w.shape) for name, w in described.items() if w.trainable}
        self._trainable_names = self.trainable.keys()
        self.state = {name: tuple(w.shape) for name, w in described.items() if not w.trainable}
        self.where = where  # "layers[1] (acme:wide from acme 0.1)"
        self.culprit = culprit  # who has the bug: "a bug in acme 0.1, not in cnnkit"
        self.builtin = builtin

    @classmethod
    def of(cls, r) -> LayerGuard:
        """The guard of a resolved layer (cnnkit.spec.ResolvedLayer) of a model."""
        entry = r.entry
        if entry.builtin:
            culprit = f"a bug in cnnkit {entry.version} itself (a built-in layer): please report it"
        else:
            culprit = f"a bug in the plugin {entry.provider}, not in cnnkit: report it to its author"
        return cls(r.layer, r.input_shape, r.output_shape, f"layers[{r.index}] ({r.type} from {entry.provider})", culprit, entry.builtin)

    def forward(self, weights: dict[str, np.ndarray], x: np.ndarray, ctx: Context):
        """``layer.forward(weights, x, ctx)``, checked; in training its backprop is checked too."""
        try:
            out = self._forward(weights, x, ctx)
        except (Exception, SystemExit) as exc:
            self._reraise("forward", ctx, exc)
        try:
            y, backprop = out
        except (TypeError, ValueError):
            raise self._broken(f"forward ({_mode(ctx)}) must return (y, backprop). Received: {_describe(out)}") from None
        if not (isinstance(y, _ndarray) and y.shape[1:] == self.output_shape and len(y) == len(x) and y.dtype == x.dtype):
            raise self._bad_output(x, y, ctx)
        if ctx.updates:
            self._check_updates(ctx.updates)
        if not ctx.train:
            return out
        if not callable(backprop):
            raise self._broken(f"forward (training) must return (y, backprop) with a callable backprop. Received: {_describe(backprop)}")
        return y, partial(self._backprop, backprop, x.shape, ctx)

    def _backprop(self, backprop: Callable, x_shape: Shape, ctx: Context, dy: np.ndarray):
        """``backprop(dy)`` of a forward with input shape ``x_shape`` and context ``ctx``, checked
        (bound to its forward with functools.partial: one small object per step, not a closure)."""
        try:
            out = backprop(dy)
        except (Exception, SystemExit) as exc:
            self._reraise("backprop", ctx, exc)
        try:
            dx, grads = out
        except (TypeError, ValueError):
            raise self._broken(f"backprop must return (dx, {{weight name: gradient}}). Received: {_describe(out)}") from None
        if dx is None:
            if ctx.input_grad:
                raise self._broken(f"backprop returned no input gradient (dx None), but ctx.input_grad was True: the layer below needs one of shape {list(x_shape)}")
        elif not (isinstance(dx, _ndarray) and dx.shape == x_shape):
            raise self._broken(f"backprop returned an input gradient of shape {_shape(dx)} for an input of shape {list(x_shape)}")
        shapes = self.trainable
        if not shapes:  # most layers have no weights: the quick way to say so
            if grads or grads.__class__ is not dict:
                raise self._bad_grad_names(grads)
            return out
        if grads.__class__ is not dict or grads.keys() != self._trainable_names:
            raise self._bad_grad_names(grads)
        for name, g in grads.items():
            if not (isinstance(g, _ndarray) and g.shape == shapes[name]):
                raise self._broken(f"backprop returned a gradient of {name!r} of shape {_shape(g)}, but the weight's shape is {list(shapes[name])}")
        return out

    # -- messages (only built when something is wrong) ------------------------------------------------

    def _broken(self, what: str) -> LayerError:
        return LayerError(f"{self.where} breaks the layer contract: {what}{self._blame()}")

    def _reraise(self, phase: str, ctx: Context, exc: BaseException):
        if isinstance(exc, MemoryError) or (self.builtin and isinstance(exc, CnnkitError)):
            raise exc  # out of memory is no one's bug; a built-in layer's own CnnkitError already says what is wrong
        text = " ".join(str(exc).split()) or "(no message)"
        if isinstance(exc, CnnkitError):  # a plugin's own error for its user: named, not blamed
            raise LayerError(f"{self.where}: {text}") from exc
        raise LayerError(f"{self.where}: {phase} ({_mode(ctx)}) raised {type(exc).__name__}: {text}{self._blame()}") from exc

    def _blame(self) -> str:
        return f" ({self.culprit})" if self.culprit else ""

    def _bad_output(self, x: np.ndarray, y: object, ctx: Context) -> LayerError:
        expected = [len(x), *self.output_shape]
        if isinstance(y, np.ndarray) and list(y.shape) == expected:
            return self._broken(f"forward ({_mode(ctx)}) turned {x.dtype} input into {y.dtype}; keep the input's dtype (float32 in a model)")
        return self._broken(f"forward ({_mode(ctx)}) returned shape {_shape(y)}, but output_shape({list(self.input_shape)}) declares {list(self.output_shape)} per sample ({expected} for this batch)")

    def _check_updates(self, updates: dict) -> None:
        for name, value in updates.items():
            if name not in self.state:
                kind = "a trainable weight" if name in self.trainable else "not one of its weights"
                raise self._broken(f"forward reported ctx.update({name!r}, ...), but {name!r} is {kind}; only weights declared trainable=False "
                                   f"({', '.join(map(repr, self.state)) or 'none'}) are updated that way")
            if getattr(value, "shape", None) != self.state[name]:
                raise self._broken(f"forward reported ctx.update({name!r}, ...) with shape {_shape(value)}, but the weight's shape is {list(self.state[name])}")

    def _bad_grad_names(self, grads: object) -> LayerError:
        if not isinstance(grads, dict):
            return self._broken(f"backprop must return (dx, {{weight name: gradient}}). Received gradients: {_describe(grads)}")
        extra = [n for n in grads if n not in self.trainable]
        missing = [n for n in self.trainable if n not in grads]
        if extra:
            fixed = [n for n in extra if n in self.state]
            why = "non-trainable weights (an optimizer would change them)" if fixed == extra else "not trainable weights of this layer"
            return self._broken(f"backprop returned gradients for {extra}, {why}; trainable: {list(self.trainable)}")
        return self._broken(f"backprop returned no gradient for {missing} (declare a weight Weight(..., trainable=False) if it is not trained)")


def guarded_forwards(layers) -> list[Callable]:
    """Each resolved layer's checked forward, in order (what ``Model`` calls)."""
    return [LayerGuard.of(r).forward for r in layers]


def _mode(ctx: Context) -> str:
    return "training" if ctx.train else "inference"


def _shape(value: object) -> object:
    return list(value.shape) if isinstance(value, np.ndarray) else _describe(value)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {list(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"{type(value).__name__}"
