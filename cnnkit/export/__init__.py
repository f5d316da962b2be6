"""Hand cnnkit models to other engines: ONNX files (``onnx.py``) and PyTorch modules (``torch.py``).

Each exporter walks a Model's layers and calls the layer's optional export hook (the contract in
``cnnkit/layers/base.py``), passing a helper object so layer files never import onnx or torch.
Nothing here is imported by ``import cnnkit``; onnx, onnxruntime and torch are extras, imported
only when an export is asked for.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import CnnkitError
from ..files import read_head

FORMATS = ("onnx",)


def require(*modules: str, extra: str, purpose: str):
    """Import ``modules`` (returned in order), or fail with one line naming the pip extra."""
    imported = []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except ImportError:
            raise CnnkitError(f"{purpose} needs {' and '.join(modules)}, which {'are' if len(modules) > 1 else 'is'} not installed: pip install 'cnnkit[{extra}]'") from None
    return imported


def layer_hook(resolved, hook: str, purpose: str):
    """The bound ``hook`` method of a resolved layer, or a one-line error naming layer, index and provider."""
    fn = getattr(resolved.layer, hook, None)
    if fn is None:
        e = resolved.entry
        raise CnnkitError(f"cannot {purpose}: layer {resolved.index} ({e.type!r}, from {e.dist} {e.version}) has no {hook} export hook; "
                          f"its provider can add one (see 'Writing a layer plugin' in cnnkit's README)")
    return fn


def require_hooks(layers, hook: str, purpose: str) -> None:
    """Fail with one line naming every layer of ``layers`` without ``hook`` (not just the first)."""
    missing = [r for r in layers if getattr(r.layer, hook, None) is None]
    if len(missing) == 1:
        layer_hook(missing[0], hook, purpose)
    if missing:
        names = ", ".join(f"layer {r.index} ({r.entry.type!r}, from {r.entry.dist} {r.entry.version})" for r in missing)
        raise CnnkitError(f"cannot {purpose}: {len(missing)} layers have no {hook} export hook: {names}; "
                          f"their providers can add one (see 'Writing a layer plugin' in cnnkit's README)")


def layer_weights(model, resolved) -> dict:
    """One layer's weights by their short names (``"kernel"``), the same arrays as ``model.weights``."""
    prefix = f"{resolved.index}."
    return {name[len(prefix):]: w for name, w in model.weights.items() if name.startswith(prefix)}


def call_hook(resolved, hook: str, purpose: str, *args):
    """Call a layer's export hook; a hook that crashes becomes one line naming the layer (the cause stays chained)."""
    fn = layer_hook(resolved, hook, purpose)
    try:
        return fn(*args)
    except CnnkitError:
        raise
    except Exception as exc:
        e = resolved.entry
        raise CnnkitError(f"cannot {purpose}: the {hook} hook of layer {resolved.index} ({e.type!r}, from {e.dist} {e.version}) failed: {type(exc).__name__}: {exc}") from exc


def is_cnnkit_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` starts like an ONNX file cnnkit wrote (ir_version field, producer "cnnkit")."""
    head = read_head(path)
    return head[:1] == b"\x08" and b"\x12\x06cnnkit" in head


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` are one existing file (False for a name too long, missing, ...: check_target says why)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def export_bundle(bundle: str | Path, out: str | Path | None = None, format: str = "onnx", force: bool = False, **options) -> Path:
    """Export the bundle file ``bundle`` to ``out`` (default: the bundle's name with the format's suffix).

    ``options`` go to the format's writer (for onnx: ``input_dtype``, ``tta``). Writes atomically: on any
    error no file (and no partial file) is left at ``out``. An existing file other than an ONNX file
    cnnkit wrote is replaced only with ``force`` (the bundle itself never).
    """
    if format not in FORMATS:
        raise CnnkitError(f"unknown export format {format!r}; cnnkit exports to: {', '.join(FORMATS)}")
    from ..bundle.atomic import check_target
    from ..runtime.model import load

    # The text as given: a Path would drop the "/" of "NAME/", which names a folder, not a file.
    target = os.fspath(out) if out is not None else str(Path(bundle).with_suffix(f".{format}"))
    if _same_file(target, bundle):
        raise CnnkitError(f"cannot write {target}: that is the bundle being exported; give another --out")
    target = check_target(target, force=force, recognise=is_cnnkit_onnx_file, what="cnnkit ONNX export", example=f"model.{format}")  # OutputError is a CnnkitError
    from .onnx import save_onnx

    require("onnx", "onnxruntime", extra="onnx", purpose="ONNX export")  # before loading: fail fast
    return save_onnx(load(bundle), target, **options)
