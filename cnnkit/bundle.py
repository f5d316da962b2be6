"""The .cnnkit bundle: one msgpack file with spec, classes, provenance, training metadata and weights.

Layout (docs/FORMAT.md is the full reference)::

    outer map: {"format": "cnnkit.bundle", "version": [major, minor], "sha256": bin(32), "payload": bin}
    payload (msgpack map, checksummed byte for byte):
      {"spec": {...}, "classes": [str], "providers": {type: {"dist": str, "version": str}},
       "training": {...}, "weights": {name: {"dtype": str, "shape": [int], "data": bin}}}

Reading is strict and bounded: msgpack limits from the file size, no ext types, no duplicate keys,
a dtype allow-list, little-endian data whose length equals prod(shape) * itemsize, a version check
before anything else, and the checksum before the payload is parsed. Writing is atomic.
:func:`read` checks the file without importing any layer plugin; :func:`load` builds the Model.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import __version__, registry
from .errors import BundleError, CnnkitError, RegistryError

FORMAT = "cnnkit.bundle"
VERSION = (1, 0)
# Weight dtypes a bundle may hold, by the name stored in the file; data is always little-endian.
DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
}
PAYLOAD_KEYS = {"spec", "classes", "providers", "training", "weights"}
MAX_NAME_LEN = 256
MAX_NDIM = 8


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


# --------------------------------------------------------------------------------------------------
# Writing


def encode(model) -> bytes:
    """The bundle bytes for ``model``; equal inputs give byte-identical output (no timestamps)."""
    spec = model.spec.to_dict()
    providers = {}
    for r in model.layers:
        providers.setdefault(r.type, {"dist": r.entry.dist, "version": r.entry.version})
    weights = {}
    for name in model.weight_shapes():  # layer order, then each layer's declared order
        array = np.asarray(model.weights[name])
        dtype_name = array.dtype.name
        if dtype_name not in DTYPES:
            raise BundleError(f"weight {name!r} has dtype {dtype_name}, which bundles cannot hold (allowed: {', '.join(DTYPES)})")
        data = np.ascontiguousarray(array, dtype=DTYPES[dtype_name]).tobytes()
        weights[name] = {"dtype": dtype_name, "shape": [int(d) for d in array.shape], "data": data}
    payload = msgpack.packb(
        {
            "spec": spec,
            "classes": list(model.classes),
            "providers": providers,
            "training": _plain(model.metadata),
            "weights": weights,
        },
        use_bin_type=True,
    )
    outer = {"format": FORMAT, "version": list(VERSION), "sha256": hashlib.sha256(payload).digest(), "payload": payload}
    return msgpack.packb(outer, use_bin_type=True)


def _plain(value: Any) -> Any:
    """Training metadata as plain msgpack types (numpy scalars and tuples converted)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise BundleError(f"training metadata holds a {type(value).__name__}, which a bundle cannot store")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BundleError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def save(model, path: str | Path) -> Path:
    """Write ``model`` as a bundle at ``path`` atomically: readers see the old file or the new one."""
    try:
        return write_atomic(path, encode(model))
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------------
# Reading


def _reject_ext(code: int, data: bytes):
    raise BundleError(f"msgpack extension type {code} is not allowed in a bundle")


def _unique_map(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"duplicate key {key!r} in a msgpack map")
        result[key] = value
    return result


def _unpack(data: bytes, what: str) -> Any:
    n = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            object_pairs_hook=_unique_map,
            max_bin_len=n,
            max_str_len=min(n, 1 << 20),
            max_array_len=min(n, 1 << 20),
            max_map_len=min(n, 1 << 20),
            max_ext_len=0,
        )
    except BundleError as exc:
        raise BundleError(f"{what}: {exc}") from None
    except msgpack.ExtraData:
        raise BundleError(f"{what}: trailing bytes after the msgpack data") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, MemoryError, OverflowError) as exc:
        raise BundleError(f"{what}: malformed msgpack ({type(exc).__name__}: {exc or 'no detail'})") from None


def _expect(value: Any, kind: type | tuple, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BundleError(f"{where} must be {names}, found {type(value).__name__}")
    return value


def decode(data: bytes, source: str = "bundle") -> Bundle:
    """Check and decode bundle bytes. Every problem raises BundleError naming what and where."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BundleError(f"{source}: expected bytes")
    data = bytes(data)
    if not data:
        raise BundleError(f"{source}: empty file")
    outer = _unpack(data, source)
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise BundleError(f"{source}: not a cnnkit bundle (no 'format': {FORMAT!r} marker)")
    version = outer.get("version")
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int and v >= 0 for v in version)):
        raise BundleError(f"{source}: 'version' must be [major, minor], found {version!r}")
    if version[0] > VERSION[0]:
        raise BundleError(f"{source}: bundle format {version[0]}.{version[1]} was made by a newer cnnkit; this cnnkit {__version__} reads format {VERSION[0]}.x: upgrade cnnkit")
    if version[0] < VERSION[0]:
        raise BundleError(f"{source}: bundle format {version[0]}.{version[1]} is older than this cnnkit supports ({VERSION[0]}.x)")
    extra = set(outer) - {"format", "version", "sha256", "payload"}
    if extra:
        raise BundleError(f"{source}: unexpected top-level keys {sorted(map(str, extra))}")
    digest = _expect(outer.get("sha256"), bytes, f"{source}: 'sha256'")
    payload = _expect(outer.get("payload"), bytes, f"{source}: 'payload'")
    if hashlib.sha256(payload).digest() != digest:
        raise BundleError(f"{source}: checksum mismatch: the payload is corrupted or was modified")
    body = _unpack(payload, f"{source}: payload")
    if not isinstance(body, dict):
        raise BundleError(f"{source}: payload must be a map, found {type(body).__name__}")
    keys = set(body)
    if keys - PAYLOAD_KEYS and version[1] <= VERSION[1]:
        raise BundleError(f"{source}: unexpected payload keys {sorted(map(str, keys - PAYLOAD_KEYS))}")
    if PAYLOAD_KEYS - keys:
        raise BundleError(f"{source}: payload lacks {sorted(PAYLOAD_KEYS - keys)}")
    spec = _expect(body["spec"], dict, f"{source}: 'spec'")
    classes = _expect(body["classes"], list, f"{source}: 'classes'")
    for i, name in enumerate(classes):
        _expect(name, str, f"{source}: classes[{i}]")
    providers = _expect(body["providers"], dict, f"{source}: 'providers'")
    for layer_type, info in providers.items():
        _expect(info, dict, f"{source}: providers.{layer_type}")
        for key in ("dist", "version"):
            _expect(info.get(key), str, f"{source}: providers.{layer_type}.{key}")
    training = _expect(body["training"], dict, f"{source}: 'training'")
    weights = {name: _decode_weight(name, entry, source) for name, entry in _expect(body["weights"], dict, f"{source}: 'weights'").items()}
    return Bundle((version[0], version[1]), spec, classes, providers, training, weights, digest.hex())


def _decode_weight(name: Any, entry: Any, source: str) -> np.ndarray:
    where = f"{source}: weights.{name}"
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN:
        raise BundleError(f"{source}: weight names must be non-empty strings of at most {MAX_NAME_LEN} characters, found {name!r:.80}")
    _expect(entry, dict, where)
    if set(entry) != {"dtype", "shape", "data"}:
        raise BundleError(f"{where} must have exactly the keys dtype, shape, data; found {sorted(map(str, entry))}")
    dtype_name = entry["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise BundleError(f"{where}.dtype {dtype_name!r:.40} is not allowed (allowed: {', '.join(DTYPES)})")
    shape = _expect(entry["shape"], list, f"{where}.shape")
    if len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise BundleError(f"{where}.shape must be a list of at most {MAX_NDIM} non-negative integers, found {shape!r:.80}")
    data = _expect(entry["data"], bytes, f"{where}.data")
    dtype = DTYPES[dtype_name]
    # Python integers do not overflow, so this product is exact however large the claimed dims are.
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise BundleError(f"{where}: shape {shape} x {dtype.itemsize} bytes needs {expected} bytes of data, found {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read(path: str | Path) -> Bundle:
    """Read and check a bundle file without importing any layer code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle not found: {path}") from None
    except IsADirectoryError:
        raise BundleError(f"{path} is a directory, not a bundle") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode(data, str(path))


def model_from_bundle(bundle: Bundle, source: str = "bundle"):
    """Build a Model from checked contents: providers installed, spec re-validated, weights matched."""
    from .model import Model
    from .spec import resolve_layers, validate_spec

    for layer in bundle.spec.get("layers", []) if isinstance(bundle.spec.get("layers"), list) else []:
        layer_type = layer.get("type") if isinstance(layer, dict) else None
        if not isinstance(layer_type, str):
            continue
        try:
            registry.find(layer_type)
        except RegistryError:
            info = bundle.providers.get(layer_type)
            if info is None:
                raise BundleError(f"{source}: layer type {layer_type!r} is not installed, and the bundle does not say which distribution provides it") from None
            raise BundleError(f"{source}: layer type {layer_type!r} comes from {info['dist']} {info['version']}, which is not installed: pip install {info['dist']}") from None
    try:
        spec = validate_spec(bundle.spec)
        layers = resolve_layers(spec)
    except CnnkitError as exc:
        raise BundleError(f"{source}: embedded spec is invalid: {exc}") from None
    expected = {f"{r.index}.{name}": tuple(shape) for r in layers for name, shape in r.layer.weight_shapes(r.input_shape).items()}
    missing = sorted(set(expected) - set(bundle.weights))
    extra = sorted(set(bundle.weights) - set(expected))
    if missing or extra:
        raise BundleError(f"{source}: weights do not match the spec: missing {missing}, unexpected {extra}")
    weights = {}
    for name, shape in expected.items():
        array = bundle.weights[name]
        if tuple(array.shape) != shape:
            raise BundleError(f"{source}: weight {name!r} has shape {list(array.shape)}, the spec needs {list(shape)}")
        weights[name] = np.ascontiguousarray(array, dtype=np.float32) if array.dtype.kind == "f" else array
    outputs = layers[-1].output_shape[-1]
    if len(bundle.classes) != outputs:
        raise BundleError(f"{source}: {len(bundle.classes)} class names for a model with {outputs} outputs")
    return Model(spec, weights, classes=bundle.classes, metadata=bundle.training)


def load(path: str | Path):
    """Load a bundle file as a ready-to-predict Model. Raises BundleError for anything wrong."""
    return model_from_bundle(read(path), str(path))
