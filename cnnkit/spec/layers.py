"""A spec's layers, resolved: each type found through the registry, its params validated by the layer's
own pydantic model, and shapes inferred layer by layer, so an impossible network fails at the layer that
makes it impossible (``layers[4]``) before any array is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import RegistryError
from ..layers.base import Layer, LayerParams, Shape
from ..layers.legacy import adapt
from ..plugins import registry
from ..plugins.contract import declared_output_shape
from .problems import Problems, pydantic_problems, received

# One sample's activations or one weight array beyond this many elements cannot be what a spec means
# (it would need gigabytes per image), so validation says so instead of training failing to allocate.
MAX_ELEMENTS = 1 << 31


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer of a validated spec: its instance, provider and the shapes around it (batch axis excluded)."""

    index: int
    layer: Layer
    entry: registry.LayerEntry
    input_shape: Shape
    output_shape: Shape

    @property
    def type(self) -> str:
        """The recorded type: plain for built-ins, 'dist:type' for plugins (see registry)."""
        return self.entry.spec_type

    @property
    def params(self) -> LayerParams:
        """The layer's validated params (its own ``Params`` model, defaults filled in)."""
        return self.layer.params

    def to_dict(self) -> dict[str, Any]:
        """The layer as a spec (and a bundle) writes it: its recorded type and every param, defaults filled in."""
        return {"type": self.type, **self.params.model_dump(mode="json")}


def resolve_layers(layers: list[dict[str, Any]], input_shape: Shape, errors: Problems) -> tuple[ResolvedLayer, ...]:
    """Instantiate each layer and infer shapes; stops at the first layer whose shape cannot be known."""
    resolved = []
    shape = tuple(input_shape)
    for i, raw in enumerate(layers):
        where = f"layers[{i}]"
        kind = raw.get("type")
        if not isinstance(kind, str):
            errors.append((f"{where}.type", f"every layer needs a string 'type'. Received: {received(kind)}"))
            break
        try:
            entry = registry.find(kind)
            cls = registry.load(kind)
        except RegistryError as exc:
            errors.append((f"{where}.type", str(exc)))
            break
        fields = {k: v for k, v in raw.items() if k != "type"}
        try:
            layer = adapt(cls(cls.Params.model_validate(fields)))  # an older-contract plugin keeps working
        except ValidationError as exc:
            errors.extend(pydantic_problems(exc, cls.Params, ("layers", i)))
            break
        problem, out = _output_shape(layer, shape, entry, kind)
        if problem:
            errors.append((where, problem))
            break
        resolved.append(ResolvedLayer(i, layer, entry, shape, out))
        shape = out
    return tuple(resolved)


def _output_shape(layer: Layer, shape: Shape, entry: registry.LayerEntry, kind: str) -> tuple[str | None, Shape]:
    """(problem, output shape) of ``layer`` on ``shape``: a problem when the shape cannot be known or is impossible."""
    try:
        out = declared_output_shape(layer, shape, entry)
    except RegistryError as exc:  # the plugin broke the contract: not the spec's fault, but it stops here
        return str(exc), ()
    except ValueError as exc:
        text = str(exc)
        return (text if text.startswith(kind) else f"{kind}: {text}"), ()
    except Exception as exc:  # a plugin bug, reported where it happened
        return f"{kind}.output_shape failed: {type(exc).__name__}: {exc}", ()
    if not out or any(d < 1 for d in out):
        return f"{kind}: output would be empty. Received: input_shape={list(shape)}, output_shape={list(out)}", out
    too_big = _too_big(out, {name: w.shape for name, w in layer.weights(shape).items()})
    if too_big:
        return f"{kind}: {too_big}. Received: input_shape={list(shape)}, output_shape={list(out)}", out
    return None, out


def _too_big(out: Shape, weight_shapes: dict[str, Shape]) -> str | None:
    if math.prod(out) > MAX_ELEMENTS:
        return f"output has {math.prod(out):,} values per sample, more than {MAX_ELEMENTS:,}"
    for name, w in weight_shapes.items():
        if math.prod(w) > MAX_ELEMENTS:
            return f"weight {name!r} would have {math.prod(w):,} values, more than {MAX_ELEMENTS:,}"
    return None


def parameter_count(resolved: tuple[ResolvedLayer, ...] | list[ResolvedLayer]) -> list[int]:
    """The number of weight values of each resolved layer."""
    return [sum(math.prod(w.shape) for w in r.layer.weights(r.input_shape).values()) for r in resolved]
