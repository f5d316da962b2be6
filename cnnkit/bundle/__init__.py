"""The .cnnkit bundle: one msgpack file with spec, classes, provenance, training metadata and weights.

Reading is strict and bounded: :mod:`.scan` walks the bytes before msgpack builds anything,
:mod:`.codec` checks every key, type, dtype and the checksum (docs/FORMAT.md is the reference).
:func:`read` checks a file without importing any layer plugin; :func:`load` builds the Model, which
re-validates the embedded spec and matches every weight name and shape against it.

Writing never clobbers and never writes what cannot be read back: :func:`save` checks the target
(:func:`.atomic.check_target`: a regular file or nothing, an existing non-bundle file only with
``force``), decodes the new bytes and rebuilds the model from them in memory, and only then
renames them into place atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import warnings

from ..plugins import provenance
from ..errors import BundleError, CnnkitError, ProviderMismatchWarning
from ..files import read_head, read_regular
from .atomic import InterruptedAfterWrite, OutputError, check_target, remove_stale_temps, write_atomic
from .codec import DTYPES, FORMAT, MAX_FILE_BYTES, VERSION, Bundle, decode, encode, pack, weight_entry
from .describe import describe, weight_fingerprint
from .scan import scan

# The start of every bundle this cnnkit writes: a msgpack map whose first key is "format".
_MARKER = b"\xa6format\xad" + FORMAT.encode()

__all__ = [
    "DTYPES", "FORMAT", "MAX_FILE_BYTES", "VERSION", "Bundle", "InterruptedAfterWrite", "OutputError",
    "check_output", "decode", "describe", "encode", "estimated_size", "is_bundle_file", "load", "model_from_bundle",
    "pack", "read", "remove_stale_temps", "save", "scan", "weight_entry", "weight_fingerprint", "write_atomic",
]


def read(path: str | Path) -> Bundle:
    """Read and check a bundle file without importing any layer code."""
    return decode(read_regular(path, "bundle", BundleError, MAX_FILE_BYTES), str(path))


def is_bundle_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a cnnkit bundle (a cheap look at its first bytes, not a full check)."""
    head = read_head(path)
    return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)) and _MARKER in head


def estimated_size(parameters: int) -> int:
    """Bytes a bundle of ``parameters`` float32 weights takes, with room for the spec and metadata."""
    return 4 * parameters + (1 << 20)


def check_output(path: str | os.PathLike, force: bool = False, size_hint: int = 0) -> Path:
    """The path a bundle may be written to (symlink followed), or OutputError — see :func:`.atomic.check_target`."""
    return check_target(path, force=force, recognise=is_bundle_file, what="cnnkit bundle", size_hint=size_hint)


def save(model, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``model`` as a bundle at ``path`` atomically: readers see the old file or the new one.

    The target must pass :func:`check_output` (``force`` replaces a non-bundle or read-only file).
    The bytes are decoded and rebuilt into a model before they replace anything, so a bundle that
    ``load`` would refuse is never written. Returns the path written (a symlink's target).
    """
    data = encode(model)
    try:
        target = check_output(path, force=force, size_hint=len(data))
    except OutputError as exc:
        raise BundleError(str(exc)) from None
    try:
        model_from_bundle(decode(data, "the new bundle"), "the new bundle")
    except BundleError as exc:
        raise BundleError(f"refusing to save {path}: {exc}") from None
    try:
        return write_atomic(target, data)
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from None


def model_from_bundle(bundle: Bundle, source: str = "bundle", *, allow_provider_mismatch: bool = False):
    """Build a Model from checked contents: providers checked, spec re-validated, weights matched.

    Each layer type must come from the distribution the bundle recorded (see cnnkit.plugins.provenance);
    another version of it loads with a ProviderMismatchWarning, another distribution only with
    ``allow_provider_mismatch=True`` (and a warning).
    """
    from ..runtime.model import Model
    from ..spec import validate_spec

    matches = provenance.resolve(bundle.spec["layers"], bundle.providers)
    for found in matches.values():
        if found.problem and not (allow_provider_mismatch and found.installed is not None):
            raise BundleError(f"{source}: {found.problem[:600]}")
        if found.problem:
            plain = found.recorded_type.rpartition(":")[2]
            warnings.warn(ProviderMismatchWarning(f"{source}: layer type {plain!r} was recorded from {found.dist} {found.version}; using {found.installed.provider} instead, as allowed (results may differ)"), stacklevel=2)
        elif found.note:
            warnings.warn(ProviderMismatchWarning(f"{source}: {found.note}"), stacklevel=2)
    # The spec names exactly the entries chosen above, so validation cannot pick another provider.
    spec_data = {**bundle.spec, "layers": [{**layer, "type": matches[layer["type"]].installed.spec_type} for layer in bundle.spec["layers"]]}
    try:
        spec = validate_spec(spec_data, from_bundle=True)
    except CnnkitError as exc:
        raise BundleError(f"{source}: embedded spec is invalid: {exc}") from None
    for name, array in bundle.weights.items():
        if array.dtype.kind != "f":
            raise BundleError(f"{source}: weight {name!r} has dtype {array.dtype.name}; cnnkit layers run on floating-point weights")
    weights = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in bundle.weights.items()}
    try:  # the Model checks weight names and shapes against the spec, and the class count
        return Model(spec, weights, classes=bundle.classes, metadata=bundle.training)
    except CnnkitError as exc:
        raise BundleError(f"{source}: {exc}") from None


def load(path: str | Path, *, allow_provider_mismatch: bool = False):
    """Load a bundle file as a ready-to-predict Model. Raises BundleError for anything wrong.

    A layer type served by another distribution than the bundle recorded is an error unless
    ``allow_provider_mismatch`` is true; another version of the recorded one loads with a
    ProviderMismatchWarning.
    """
    return model_from_bundle(read(path), str(path), allow_provider_mismatch=allow_provider_mismatch)
