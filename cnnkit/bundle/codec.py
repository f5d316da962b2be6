"""Bundle bytes: encode a Model, and decode + check bytes into a :class:`Bundle` (no layer code runs).

Layout (docs/FORMAT.md is the full reference)::

    outer map: {"format": "cnnkit.bundle", "version": [major, minor], "sha256": bin(32), "payload": bin}
    payload (msgpack map, checksummed byte for byte):
      {"spec": {...}, "classes": [str], "providers": {type: {"dist": str, "version": str}},
       "training": {...}, "weights": {name: {"dtype": str, "shape": [int], "data": bin}}}

:func:`pack` wraps any payload map (a plain bundle's, or a checkpoint's with its extra ``checkpoint``
map) in the outer map once. Decoding runs the byte pre-scanner (scan.py) first, then checks the format version (first), the
checksum, every key and type, a dtype allow-list, little-endian data whose length equals
prod(shape) * itemsize, and finite float weights.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from .. import __version__
from ..errors import BundleError
from ..files import looks_like
from ..plugins.registry import normalize_dist
from .scan import unpack

FORMAT = "cnnkit.bundle"
# 1.1: plugin layer types are recorded qualified ("dist:type"); maxpool2d's stride is stored filled in.
VERSION = (1, 1)
# 1.2: a checkpoint, a 1.1 bundle whose payload also holds a "checkpoint" map (docs/FORMAT.md).
CHECKPOINT_VERSION = (1, 2)
# Weight dtypes a bundle may hold, by the name stored in the file; data is always little-endian.
DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
}
OUTER_KEYS = ("format", "version", "sha256", "payload")
PAYLOAD_KEYS = ("spec", "classes", "providers", "training", "weights")
WEIGHT_KEYS = ("dtype", "shape", "data")
MAX_FILE_BYTES = (1 << 32) + (1 << 16)  # msgpack bin32 caps the payload at 4 GiB; the outer map adds little
MAX_NAME_LEN = 256
MAX_NDIM = 8
_WEIGHT_NAME = re.compile(r"(0|[1-9][0-9]*)\.[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Bundle:
    """A bundle's checked contents, before any layer code is involved."""

    version: tuple[int, int]
    spec: dict[str, Any]
    classes: list[str]
    providers: dict[str, dict[str, str]]
    training: dict[str, Any]
    weights: dict[str, np.ndarray]
    sha256: str
    # Payload keys a newer minor version added (a checkpoint's "checkpoint" map), decoded but not checked here.
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Writing


def encode(model) -> bytes:
    """The bundle bytes for ``model``; equal inputs give byte-identical output (no timestamps)."""
    return pack(model_payload(model))


def model_payload(model) -> dict[str, Any]:
    """The payload map of ``model``'s bundle: spec, classes, providers, training metadata, weights."""
    spec = model.spec.to_dict()
    # The reader rejects this mismatch, so writing it would only produce a bundle no one can load.
    if len(model.classes) != model.output_shape[-1]:
        raise BundleError(f"{len(model.classes)} class names for a model with {model.output_shape[-1]} outputs; refusing to save a bundle that cannot be loaded")
    providers = {}
    for r in model.layers:
        providers.setdefault(r.type, {"dist": r.entry.dist, "version": r.entry.version})
    weights = {}
    for name in model.weight_shapes():  # layer order, then each layer's declared order
        weights[name] = weight_entry(name, model.weights[name])
    return {
        "spec": spec,
        "classes": [str(c) for c in model.classes],
        "providers": providers,
        "training": _plain(model.metadata, "training metadata"),
        "weights": weights,
    }


def weight_entry(name: str, array: np.ndarray) -> dict[str, Any]:
    """One weight as the bundle stores it: {dtype, shape, data} with little-endian C-order bytes."""
    array = np.asarray(array)
    dtype_name = array.dtype.name
    if dtype_name not in DTYPES:
        raise BundleError(f"weight {name!r} has dtype {dtype_name}, which bundles cannot hold (allowed: {', '.join(DTYPES)})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BundleError(f"weight {name!r} holds NaN or infinite values; refusing to save a broken model (did training diverge?)")
    data = np.ascontiguousarray(array, dtype=DTYPES[dtype_name]).tobytes()
    return {"dtype": dtype_name, "shape": [int(d) for d in array.shape], "data": data}


def pack(payload: dict[str, Any], version: tuple[int, int] = VERSION) -> bytes:
    """Wrap a payload map in the outer map with format marker, ``version`` and checksum (packed once)."""
    body = msgpack.packb(payload, use_bin_type=True)
    outer = {"format": FORMAT, "version": list(version), "sha256": hashlib.sha256(body).digest(), "payload": body}
    return msgpack.packb(outer, use_bin_type=True)


def _plain(value: Any, where: str) -> Any:
    """Training metadata as plain msgpack types (numpy scalars and tuples converted, floats finite)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise BundleError(f"{where} is {value}; bundles hold finite numbers only")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise BundleError(f"{where} holds a {type(value).__name__}, which a bundle cannot store")


# --------------------------------------------------------------------------------------------------
# Reading: keys and types


def _kind(value: Any) -> str:
    return {dict: "map", list: "array", str: "string", bytes: "binary", bool: "boolean", int: "integer", float: "float"}.get(type(value), "nil" if value is None else type(value).__name__)


def _expect(value: Any, kind: type | tuple, where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join({dict: "a map", list: "an array", str: "a string", bytes: "binary", int: "an integer"}.get(k, k.__name__) for k in kinds)
        raise BundleError(f"{where} must be {names}, found {_kind(value)}")
    return value


def _check_keys(mapping: dict, known: tuple[str, ...], where: str, newer_minor: bool, required: tuple[str, ...] | None = None) -> None:
    """Exactly the known keys; a file from a newer minor version may add keys, which are ignored."""
    missing = [k for k in (known if required is None else required) if k not in mapping]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(map(repr, missing))}")
    extra = [k for k in mapping if k not in known]
    if extra and not newer_minor:
        raise BundleError(f"{where} has unexpected keys {', '.join(repr(k)[:60] for k in extra[:5])}")


def _check_plain(value: Any, where: str) -> None:
    """Spec and training hold only nil, booleans, numbers, strings, arrays and string-keyed maps."""
    if isinstance(value, bytes):
        raise BundleError(f"{where} holds binary data; only nil, booleans, numbers, strings, arrays and maps may appear here")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k:.40}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")


def decode(data: bytes, source: str = "bundle") -> Bundle:
    """Check and decode bundle bytes. Every problem raises BundleError naming what and where."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BundleError(f"{source}: expected bytes, found {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BundleError(f"{source}: empty file")
    kind = looks_like(data[:16])
    if kind:  # a PNG starts like a msgpack map: name the picture, not what msgpack makes of its bytes
        raise BundleError(f"{source} is not a cnnkit bundle (it looks like {kind})")
    if len(data) > MAX_FILE_BYTES:
        raise BundleError(f"{source}: {len(data):,} bytes is larger than any bundle can be ({MAX_FILE_BYTES:,})")
    if not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise BundleError(f"{source}: not a cnnkit bundle (it does not start with a msgpack map)")
    outer = unpack(data, source)
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise BundleError(f"{source}: not a cnnkit bundle (no 'format': {FORMAT!r} marker)")
    # The version comes first: a newer major may change anything after it.
    version = outer.get("version")
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int and 0 <= v < 1 << 32 for v in version)):
        raise BundleError(f"{source}: 'version' must be [major, minor] (two non-negative integers), found {version!r:.60}")
    major, minor = version
    if major > VERSION[0]:
        raise BundleError(f"{source}: bundle format {major}.{minor} was made by a newer cnnkit; cnnkit {__version__} reads format {VERSION[0]}.x: upgrade cnnkit")
    if major < VERSION[0]:
        raise BundleError(f"{source}: bundle format {major}.{minor} is older than this cnnkit supports ({VERSION[0]}.x)")
    newer = minor > VERSION[1]
    _check_keys(outer, OUTER_KEYS, source, newer)
    digest = _expect(outer["sha256"], bytes, f"{source}: 'sha256'")
    if len(digest) != 32:
        raise BundleError(f"{source}: 'sha256' must be 32 bytes, found {len(digest)}")
    payload = _expect(outer["payload"], bytes, f"{source}: 'payload'")
    if hashlib.sha256(payload).digest() != digest:
        raise BundleError(f"{source}: checksum mismatch: the payload is corrupted or was modified")
    where = f"{source}: payload"
    body = unpack(payload, where)
    _expect(body, dict, where)
    _check_keys(body, PAYLOAD_KEYS, where, newer)
    spec = _check_spec_outline(body["spec"], f"{where}.spec")
    classes = _expect(body["classes"], list, f"{where}.classes")
    for i, name in enumerate(classes):
        _expect(name, str, f"{where}.classes[{i}]")
    providers = _check_providers(body["providers"], spec, f"{where}.providers", newer)
    training = _expect(body["training"], dict, f"{where}.training")
    _check_plain(training, f"{where}.training")
    entries = _expect(body["weights"], dict, f"{where}.weights")
    weights = {name: _decode_weight(name, entry, len(spec["layers"]), f"{where}.weights", newer) for name, entry in entries.items()}
    extra = {k: v for k, v in body.items() if k not in PAYLOAD_KEYS}  # only a newer minor gets here with any
    return Bundle((major, minor), spec, classes, providers, training, weights, digest.hex(), extra)


def _check_spec_outline(spec: Any, where: str) -> dict[str, Any]:
    """What can be checked without layer code: the outline that `inspect` relies on.

    The full re-validation (layer params, shapes) happens in :func:`model_from_bundle`.
    """
    _expect(spec, dict, where)
    _check_plain(spec, where)
    inp = _expect(spec.get("input"), dict, f"{where}.input")
    shape = _expect(inp.get("shape"), list, f"{where}.input.shape")
    if not shape or not all(type(d) is int and d > 0 for d in shape):
        raise BundleError(f"{where}.input.shape must be a non-empty array of positive integers, found {shape!r:.60}")
    layers = _expect(spec.get("layers"), list, f"{where}.layers")
    if not layers:
        raise BundleError(f"{where}.layers is empty")
    for i, layer in enumerate(layers):
        _expect(layer, dict, f"{where}.layers[{i}]")
        _expect(layer.get("type"), str, f"{where}.layers[{i}].type")
    return spec


def _check_providers(providers: Any, spec: dict[str, Any], where: str, newer: bool) -> dict[str, dict[str, str]]:
    _expect(providers, dict, where)
    for layer_type, info in providers.items():
        _expect(info, dict, f"{where}.{layer_type:.40}")
        _check_keys(info, ("dist", "version"), f"{where}.{layer_type:.40}", newer)
        for key in ("dist", "version"):
            _expect(info[key], str, f"{where}.{layer_type:.40}.{key}")
    types = {layer["type"] for layer in spec["layers"]}
    for layer_type in sorted(t for t in types if ":" in t and t in providers):
        dist = layer_type.rpartition(":")[0]
        if normalize_dist(dist) != normalize_dist(providers[layer_type]["dist"]):
            raise BundleError(f"{where}.{layer_type:.40}.dist is {providers[layer_type]['dist']!r:.60}, but the type names distribution {dist!r:.60}")
    missing = sorted(types - set(providers))
    extra = sorted(set(providers) - types)
    if missing:
        raise BundleError(f"{where} does not name the distribution of layer types {missing}")
    if extra:
        raise BundleError(f"{where} names layer types the spec does not use: {[t[:40] for t in extra[:5]]}")
    return providers


def _decode_weight(name: str, entry: Any, layer_count: int, parent: str, newer: bool) -> np.ndarray:
    where = f"{parent}[{name!r:.60}]"
    if len(name) > MAX_NAME_LEN or not _WEIGHT_NAME.fullmatch(name):
        raise BundleError(f"{where}: weight names look like '<layer index>.<name>' (e.g. '0.kernel', at most {MAX_NAME_LEN} characters)")
    if int(name.partition(".")[0]) >= layer_count:
        raise BundleError(f"{where}: the spec has only {layer_count} layers")
    _expect(entry, dict, where)
    _check_keys(entry, WEIGHT_KEYS, where, newer)
    dtype_name = entry["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise BundleError(f"{where}.dtype {dtype_name!r:.40} is not allowed (allowed: {', '.join(DTYPES)})")
    shape = _expect(entry["shape"], list, f"{where}.shape")
    if len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise BundleError(f"{where}.shape must be an array of at most {MAX_NDIM} non-negative integers, found {shape!r:.80}")
    data = _expect(entry["data"], bytes, f"{where}.data")
    dtype = DTYPES[dtype_name]
    # Python integers do not overflow, so this product is exact however large the claimed dims are.
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise BundleError(f"{where}: shape {shape!r:.80} of {dtype_name} needs {expected:,} bytes of data, found {len(data):,}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise BundleError(f"{where} holds NaN or infinite values")
    if dtype.kind == "b" and len(data) and max(data) > 1:
        raise BundleError(f"{where}: bool data bytes must be 0 or 1")
    return array

