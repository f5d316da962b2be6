"""The layer contract, checked where a spec or a model runs a layer (``check_layer`` checks it all, on request).

Two checks cost nothing on the hot path: ``output_shape`` must give ints (when a spec is validated),
and the first forward pass of each Model runs a two-sample slice of its batch through every layer,
in inference and in training mode, on copies of the weights, and compares each output with the
shape the layer declared and with float32. A broken plugin then fails at once with one line naming
the layer index, its type and its distribution, instead of a numpy error somewhere downstream or a
silently float64 model.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import RegistryError
from ..layers.base import Context, Layer, Shape

if TYPE_CHECKING:
    from .registry import LayerEntry

SAMPLES = 2  # enough to see the batch axis; inference is per-sample by contract


def declared_output_shape(layer: Layer, input_shape: Shape, entry: LayerEntry) -> Shape:
    """``layer.output_shape(input_shape)`` as a tuple of ints; anything else is a RegistryError naming the plugin.

    ValueError (an input the layer cannot take) and other exceptions pass through to the caller.
    """
    out = layer.output_shape(input_shape)
    dims = tuple(out) if isinstance(out, (tuple, list)) else None
    if dims is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise RegistryError(
            f"{entry.spec_type} from {entry.provider} breaks the layer contract: output_shape must return a tuple of ints. "
            f"Received: output_shape({list(input_shape)}) = {out!r}"
        )
    return tuple(int(d) for d in dims)


def check_first_forward(layers: Sequence, layer_weights: Sequence[dict[str, np.ndarray]], x: np.ndarray) -> bool:
    """Check every layer of a model on a slice of its first batch ``x``; True once checked.

    ``layers`` are the model's resolved layers (cnnkit.spec.ResolvedLayer) and ``layer_weights`` each
    one's weights by name. An input of the wrong shape is not checked here (False): the model's own
    error reports it.
    """
    input_shape = tuple(layers[0].input_shape)
    if np.ndim(x) != len(input_shape) + 1 or tuple(np.shape(x)[1:]) != input_shape or len(x) == 0:
        return False
    for train in (False, True):
        y = np.ascontiguousarray(x[:SAMPLES], dtype=np.float32)
        for i, r in enumerate(layers):
            where = f"layers[{r.index}] ({r.type} from {r.entry.provider})"
            weights = {name: w.copy() for name, w in layer_weights[i].items()}
            ctx = Context(train, seed=[0])
            try:
                out, _ = r.layer.forward(weights, y, ctx)
            except Exception as exc:  # a plugin bug, named where it happened
                raise RegistryError(f"{where}: forward ({_mode(train)}) failed on a batch of shape {list(y.shape)}: {type(exc).__name__}: {exc}") from exc
            expected = [len(y), *r.output_shape]
            if not isinstance(out, np.ndarray) or list(out.shape) != expected:
                got = list(out.shape) if isinstance(out, np.ndarray) else type(out).__name__
                raise RegistryError(f"{where} breaks the layer contract: forward ({_mode(train)}) returned shape {got}, but output_shape({list(r.input_shape)}) declares {expected[1:]} per sample ({expected} for this batch)")
            if out.dtype != np.float32:
                raise RegistryError(f"{where} breaks the layer contract: forward ({_mode(train)}) turned float32 input into {out.dtype}; the runtime is float32 end to end")
            y = out
    return True


def _mode(train: bool) -> str:
    return "training" if train else "inference"
