"""Built-in layers. Each module holds one layer type; all register through the `cnnkit.layers` entry points."""

from .base import Backprop, Grads, Layer, LayerParams, Shape

__all__ = ["Backprop", "Grads", "Layer", "LayerParams", "Shape"]
