"""The .cnnkit bundle: one msgpack file with spec, classes, provenance, training metadata and weights.

Reading is strict and bounded: :mod:`.scan` walks the bytes before msgpack builds anything,
:mod:`.codec` checks every key, type, dtype and the checksum (docs/FORMAT.md is the reference).
:func:`read` checks a file without importing any layer plugin; :func:`spec_and_weights` resolves what
inference needs of its spec (provenance, input, layers) and checks the weights' kind; the Model is built
from them by ``cnnkit.load`` (cnnkit.runtime.model), which matches every weight name and shape.

Writing never clobbers and never writes what cannot be read back: :func:`save` checks the target
(:func:`.atomic.check_target`: a regular file or nothing, an existing non-bundle file only with
``force``), decodes the new bytes and compares their spec, classes, providers and weights with the
model's, and only then renames them into place atomically.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import BundleError, CnnkitError, ProviderMismatchWarning
from ..files import read_head, read_regular
from ..plugins import provenance
from ..spec import ModelSpec, validate_spec
from .atomic import InterruptedAfterWrite, OutputError, check_target, remove_stale_temps, write_atomic
from .codec import CHECKPOINT_VERSION, DTYPES, FORMAT, MAX_FILE_BYTES, VERSION, Bundle, decode, encode, model_payload, pack, weight_entry
from .describe import describe, weight_fingerprint
from .scan import scan

# The start of every bundle this cnnkit writes: a msgpack map whose first key is "format".
_MARKER = b"\xa6format\xad" + FORMAT.encode()
# ... followed by "version": [1, 2] in a checkpoint (both numbers are msgpack fixints).
_CHECKPOINT_MARKER = _MARKER + b"\xa7version\x92" + bytes(CHECKPOINT_VERSION)

__all__ = [
    "CHECKPOINT_VERSION", "DTYPES", "FORMAT", "MAX_FILE_BYTES", "VERSION", "Bundle", "InterruptedAfterWrite", "OutputError",
    "check_output", "decode", "describe", "encode", "estimated_size", "is_bundle_file", "is_checkpoint_file", "model_payload", "pack",
    "read", "remove_stale_temps", "save", "scan", "spec_and_weights", "weight_entry", "weight_fingerprint", "write_atomic",
]


def read(path: str | Path) -> Bundle:
    """Read and check a bundle file without importing any layer code."""
    return decode(read_regular(path, "bundle", BundleError, MAX_FILE_BYTES), str(path))


def is_bundle_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a cnnkit bundle (a cheap look at its first bytes, not a full check)."""
    head = read_head(path)
    return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)) and _MARKER in head


def is_checkpoint_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a checkpoint (a bundle of format 1.2, a run folder's last.cnnkit)."""
    return read_head(path).startswith(_CHECKPOINT_MARKER, 1)


def estimated_size(parameters: int, spec=None) -> int:
    """Bytes a bundle of ``parameters`` float32 weights takes (a little more): the weights, their
    names and shapes, and the spec and the training metadata of ``spec`` (a ModelSpec) when given."""
    overhead = 4096  # outer map, checksum, classes, providers, metrics
    if spec is not None:
        overhead += 2 * len(json.dumps(spec.to_dict())) + 256 * spec.train.epochs + 256 * len(spec.layers)  # spec, history rows, weight entries
    return 4 * parameters + overhead


def check_output(path: str | os.PathLike, force: bool = False, size_hint: int = 0) -> Path:
    """The path a bundle may be written to (symlink followed), or OutputError — see :func:`.atomic.check_target`.

    A checkpoint (a run folder's last.cnnkit) is at least as valuable as a bundle: it is replaced only with ``force``."""
    if not force and is_checkpoint_file(path):
        folder = Path(os.path.realpath(path)).parent
        raise OutputError(f"refusing to overwrite {path}: it is the checkpoint of the run in {folder} (cnnkit run --resume {folder} "
                          "goes on with it; --force replaces it; in Python: force=True)")
    return check_target(path, force=force, recognise=is_bundle_file, what="cnnkit bundle", size_hint=size_hint)


def save(model, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``model`` as a bundle at ``path`` atomically: readers see the old file or the new one.

    The target must pass :func:`check_output` (``force`` replaces a non-bundle or read-only file).
    The bytes are decoded and compared with the model before they replace anything: the spec the
    model was resolved from, its classes, the providers of its layers, and every weight with the
    name, shape and values its spec gives it. So what ``load`` reads back is this model, and a bundle
    that ``load`` would refuse is never written, without running any layer code again.
    Returns the path written (a symlink's target).
    """
    data = encode(model)
    try:
        target = check_output(path, force=force, size_hint=len(data))
    except OutputError as exc:
        raise BundleError(str(exc)) from None
    try:
        problem = _differs(decode(data, "the new bundle"), model)
    except BundleError as exc:
        problem = str(exc)
    if problem:
        raise BundleError(f"refusing to save {path}: {problem}")
    try:
        return write_atomic(target, data)
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from None


def _differs(bundle: Bundle, model) -> str | None:
    """What the decoded ``bundle`` says differently from ``model`` (None: it reads back as the model)."""
    if bundle.spec != model.spec.to_dict():
        return "the spec does not read back as the model's"
    if bundle.classes != [str(c) for c in model.classes]:
        return "the class names do not read back as the model's"
    if bundle.providers != {r.type: {"dist": r.entry.dist, "version": r.entry.version} for r in model.layers}:
        return "the layer providers do not read back as the model's"
    expected = model.weight_shapes()  # what the spec gives each layer
    if list(bundle.weights) != list(expected):
        return f"the weights do not match the spec: expected {list(expected)[:10]}, found {list(bundle.weights)[:10]}"
    for name, shape in expected.items():
        array = bundle.weights[name]
        if array.shape != shape:
            return f"weight {name!r} has shape {list(array.shape)}, the spec needs {list(shape)}"
        if array.dtype.kind != "f":
            return f"weight {name!r} has dtype {array.dtype.name}; cnnkit layers run on floating-point weights"
        if not np.array_equal(array, model.weights[name]):
            return f"weight {name!r} does not read back as the model's"
    return None


def spec_and_weights(bundle: Bundle, source: str = "bundle", *, allow_provider_mismatch: bool = False) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """What a Model is built from: the bundle's spec resolved for inference (providers checked; input,
    preprocessing and layers validated; its data and train sections left for whoever asks for them)
    and its weights as float32.

    Each layer type must come from the distribution the bundle recorded (see cnnkit.plugins.provenance);
    another version of it loads with a ProviderMismatchWarning, another distribution only with
    ``allow_provider_mismatch=True`` (and a warning).
    """
    matches = provenance.resolve(bundle.spec["layers"], bundle.providers)
    for found in matches.values():
        if found.problem and not (allow_provider_mismatch and found.installed is not None):
            raise BundleError(f"{source}: {found.problem[:600]}")
        if found.problem:
            plain = found.recorded_type.rpartition(":")[2]
            warnings.warn(ProviderMismatchWarning(f"{source}: layer type {plain!r} was recorded from {found.dist} {found.version}; using {found.installed.provider} instead, as allowed (results may differ)"), stacklevel=3)
        elif found.note:
            warnings.warn(ProviderMismatchWarning(f"{source}: {found.note}"), stacklevel=3)
    # The spec names exactly the entries chosen above, so validation cannot pick another provider.
    spec_data = {**bundle.spec, "layers": [{**layer, "type": matches[layer["type"]].installed.spec_type} for layer in bundle.spec["layers"]]}
    try:
        spec = validate_spec(spec_data, from_bundle=True)
    except CnnkitError as exc:
        raise BundleError(f"{source}: embedded spec is invalid: {exc}") from None
    for name, array in bundle.weights.items():
        if array.dtype.kind != "f":
            raise BundleError(f"{source}: weight {name!r} has dtype {array.dtype.name}; cnnkit layers run on floating-point weights")
    return spec, {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in bundle.weights.items()}
