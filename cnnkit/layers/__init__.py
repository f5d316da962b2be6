"""Built-in layers. Each module holds one layer type; all register through the `cnnkit.layers` entry points.

A layer author needs what this package exports: ``Layer``, ``LayerParams``, ``Weight``, ``Context``
and the initialisers (the contract: cnnkit/layers/base.py)."""

from .base import Backprop, Context, Grads, Layer, LayerParams, Shape, Weight, glorot_uniform, kernel_init, normal

__all__ = ["Backprop", "Context", "Grads", "Layer", "LayerParams", "Shape", "Weight", "glorot_uniform", "kernel_init", "normal"]
