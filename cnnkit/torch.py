"""PyTorch interop (extra ``cnnkit[torch]``): ``to_module(model)`` and ``from_module(module, model)``.

See ``cnnkit.export.torch`` for the details; torch is imported when one of them is called.
"""

from .export.torch import from_module, to_module

__all__ = ["from_module", "to_module"]
