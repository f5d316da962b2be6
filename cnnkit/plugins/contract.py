"""The layer contract, checked where a spec is validated: ``output_shape`` must give a tuple of ints,
none of them negative. What a layer returns at run time is checked at every step by
cnnkit.runtime.guard; ``cnnkit.testing.check_layer`` checks all of the contract, on request.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from ..errors import RegistryError
from ..layers.base import Layer, Shape

if TYPE_CHECKING:
    from .registry import LayerEntry


def declared_output_shape(layer: Layer, input_shape: Shape, entry: LayerEntry) -> Shape:
    """``layer.output_shape(input_shape)`` as a tuple of ints; anything else is a RegistryError naming the plugin.

    ValueError (an input the layer cannot take) and other exceptions pass through to the caller. A
    negative size is the layer's bug (it should have raised ValueError for an input it cannot take);
    a size of zero is left to the caller, which calls the output empty.
    """
    out = layer.output_shape(input_shape)
    dims = tuple(out) if isinstance(out, (tuple, list)) else None
    if dims is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise RegistryError(
            f"{entry.spec_type} from {entry.provider} breaks the layer contract: output_shape must return a tuple of ints. "
            f"Received: output_shape({list(input_shape)}) = {out!r}"
        )
    if any(d < 0 for d in dims):
        raise RegistryError(
            f"{entry.spec_type} from {entry.provider} breaks the layer contract: output_shape returned a negative size "
            f"(output_shape({list(input_shape)}) = {[int(d) for d in dims]}); for an input it cannot take, a layer raises "
            f"ValueError(\"what is wrong. Received: ...\")"
        )
    return tuple(int(d) for d in dims)
