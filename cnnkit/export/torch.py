"""PyTorch interop: a cnnkit Model as a ``torch.nn.Sequential`` and trained torch weights back.

``to_module(model)`` builds one child module per layer (child ``str(i)`` is layer ``i``) through
each layer's ``to_torch`` hook, with copies of the weights in torch's layouts (a dense kernel is
transposed to Linear's (out, in); conv kernels are (F, C, k, k) in both). ``from_module(module,
model)`` reads them back through ``from_torch`` into ``model.weights`` in place. Requires the extra
``cnnkit[torch]``; torch is imported when one of these is called. Public as ``cnnkit.torch``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..errors import CnnkitError
from . import call_hook, layer_weights, require, require_hooks


class TorchHelper:
    """The helper ``to_torch(t, weights, input_shape)`` / ``from_torch(t, module, input_shape)`` hooks get."""

    def __init__(self, torch):
        self.torch = torch
        self.nn = torch.nn

    def set(self, tensor, array) -> None:
        """Copy ``array`` into a parameter or buffer of the same shape (float32, no gradient tracking)."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if tuple(tensor.shape) != array.shape:
            raise CnnkitError(f"cannot copy an array of shape {list(array.shape)} into a torch tensor of shape {list(tensor.shape)}")
        with self.torch.no_grad():
            tensor.copy_(self.torch.from_numpy(array))

    def array(self, tensor) -> np.ndarray:
        """A float32 NumPy copy of a tensor (detached, on the CPU)."""
        return tensor.detach().to("cpu", self.torch.float32).numpy().copy()

    def sequential(self, **children):
        """``nn.Sequential`` with named children, e.g. ``t.sequential(pad=..., conv=...)``."""
        return self.nn.Sequential(OrderedDict(children))


def _helper() -> TorchHelper:
    (torch,) = require("torch", extra="torch", purpose="PyTorch interop")
    return TorchHelper(torch)


def to_module(model, logits: bool = False):
    """A ``torch.nn.Sequential`` computing what ``model.forward`` computes, in float32 on the CPU.

    ``logits=True`` leaves out a final softmax layer (as ``Model.forward(logits=True)`` does), the
    form torch's ``CrossEntropyLoss`` trains. The module starts in eval mode, like cnnkit's predict.
    """
    t = _helper()
    count = len(model.layers) - 1 if logits and model.ends_with_softmax else len(model.layers)
    require_hooks(model.layers[:count], "to_torch", "convert to PyTorch")  # every layer without one named at once
    modules = []
    for r in model.layers[:count]:
        module = call_hook(r, "to_torch", "convert to PyTorch", t, layer_weights(model, r), r.input_shape)
        if not isinstance(module, t.nn.Module):
            raise CnnkitError(f"cannot convert to PyTorch: the to_torch hook of layer {r.index} ({r.type!r}, from {r.entry.provider}) returned {type(module).__name__}, not a torch.nn.Module")
        modules.append(module)
    return t.nn.Sequential(*modules).float().eval()


def from_module(module, model) -> None:
    """Copy the weights of ``module`` (built by ``to_module(model)`` and trained) back into ``model``.

    Every weight is checked against the spec's shape before anything changes; then the arrays of
    ``model.weights`` are overwritten in place (the model keeps working, views stay valid).
    """
    t = _helper()
    children = list(module.children()) if isinstance(module, t.nn.Sequential) else None
    if children is None or len(children) not in (len(model.layers), len(model.layers) - model.ends_with_softmax):
        got = f"a {type(module).__name__}" + (f" of {len(children)} modules" if children is not None else "")
        raise CnnkitError(f"from_module needs the nn.Sequential that to_module built for this model ({len(model.layers)} layers). Received: {got}")
    updates = {}
    for r, child in zip(model.layers, children):
        shapes = {name: w.shape for name, w in r.layer.weights(r.input_shape).items()}
        if not shapes:
            continue
        arrays = call_hook(r, "from_torch", "read weights from PyTorch", t, child, r.input_shape)
        for name, shape in shapes.items():
            key = f"{r.index}.{name}"
            if name not in arrays or np.shape(arrays[name]) != tuple(shape):
                got = list(np.shape(arrays[name])) if name in arrays else "nothing"
                raise CnnkitError(f"from_module: layer {r.index} ({r.type!r}) gave {got} for weight {key!r}, the model needs shape {list(shape)}")
            array = np.asarray(arrays[name], dtype=np.float32)
            if not np.isfinite(array).all():
                raise CnnkitError(f"from_module: weight {key!r} holds NaN or infinite values")
            updates[key] = array
    for key, array in updates.items():
        np.copyto(model.weights[key], array)
