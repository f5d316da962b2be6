"""The .cnnkit bundle: one msgpack file with spec, classes, provenance, training metadata and weights.

Layout (docs/FORMAT.md is the full reference)::

    outer map: {"format": "cnnkit.bundle", "version": [major, minor], "sha256": bin(32), "payload": bin}
    payload (msgpack map, checksummed byte for byte):
      {"spec": {...}, "classes": [str], "providers": {type: {"dist": str, "version": str}},
       "training": {...}, "weights": {name: {"dtype": str, "shape": [int], "data": bin}}}

Reading is strict and bounded. Before msgpack builds a single object, :func:`scan` walks the bytes
and rejects ext types, non-string map keys, non-finite floats, nesting deeper than ``MAX_DEPTH`` and
any container that claims more items than the bytes left could hold (so no allocation is ever larger
than the file). Then: the format version (first), the checksum, every key and type, a dtype
allow-list, little-endian data whose length equals prod(shape) * itemsize, finite float weights.
:func:`read` checks a file without importing any layer plugin; :func:`load` builds the Model, which
re-validates the embedded spec and matches every weight name and shape against it. Writing is atomic.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from . import __version__, provenance
from .errors import BundleError, CnnkitError, ProviderMismatchWarning
from .registry import normalize_dist

FORMAT = "cnnkit.bundle"
# 1.1: plugin layer types are recorded qualified ("dist:type"); maxpool2d's stride is stored filled in.
VERSION = (1, 1)
# Weight dtypes a bundle may hold, by the name stored in the file; data is always little-endian.
DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")
}
OUTER_KEYS = ("format", "version", "sha256", "payload")
PAYLOAD_KEYS = ("spec", "classes", "providers", "training", "weights")
WEIGHT_KEYS = ("dtype", "shape", "data")
MAX_FILE_BYTES = (1 << 32) + (1 << 16)  # msgpack bin32 caps the payload at 4 GiB; the outer map adds little
MAX_DEPTH = 32  # containers inside containers; a real bundle nests about 6 deep
MAX_ITEMS = 1 << 20  # msgpack objects in one map (outer or payload); weights are one bin each
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


# --------------------------------------------------------------------------------------------------
# Writing


def encode(model) -> bytes:
    """The bundle bytes for ``model``; equal inputs give byte-identical output (no timestamps)."""
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
    return pack(
        {
            "spec": spec,
            "classes": [str(c) for c in model.classes],
            "providers": providers,
            "training": _plain(model.metadata, "training metadata"),
            "weights": weights,
        }
    )


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


def pack(payload: dict[str, Any]) -> bytes:
    """Wrap a payload map in the outer map with format marker, version and checksum."""
    body = msgpack.packb(payload, use_bin_type=True)
    outer = {"format": FORMAT, "version": list(VERSION), "sha256": hashlib.sha256(body).digest(), "payload": body}
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


def _temp_name(path: Path) -> Path:
    # The writer's pid in the name lets a later save recognise leftovers of a killed process.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files that an earlier, killed writer left next to ``path`` (its pid is gone)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.([0-9]+)\.[0-9a-f]{{8}}\.tmp")
    try:
        candidates = list(path.parent.iterdir())
    except OSError:
        return
    for leftover in candidates:
        match = pattern.fullmatch(leftover.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except (PermissionError, OverflowError, OSError):
            pass  # alive under another user, or not a pid we can ask about: leave it


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    Readers see the old file or the new one, never a mix; a failure or an exception removes the
    temporary file, and leftovers of a killed process are swept by the next save to the same path.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise BundleError(f"cannot write {path}: folder {folder} does not exist")
    _remove_stale_temps(path)
    tmp = _temp_name(path)
    # os.open with 0o666 lets the umask decide the final mode, as a plain open() would (mkstemp: 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    data = encode(model)
    try:
        return write_atomic(path, data)
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------------
# Reading: a structural scan before msgpack builds anything


# Fixed-width msgpack types: first byte -> (name, bytes after the first byte).
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
# Variable-length types: first byte -> (kind, width of the length field).
_SIZED = {0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4), 0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
          0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4)}
_EXT = {0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}


def scan(data: bytes, what: str) -> None:
    """Walk msgpack ``data`` without building objects; raise BundleError at the first hostile token.

    Checks: exactly one top-level object and no trailing bytes; no ext types (that is where
    pickles, timestamps and other executable or surprising payloads would ride); map keys are
    strings; floats are finite; nesting at most MAX_DEPTH; at most MAX_ITEMS objects; every length
    fits in the bytes that remain, so nothing downstream allocates more than the file holds.
    """
    n = len(data)
    pos = 0
    items = 0
    stack: list[list[int]] = []  # per open container: [objects still to read, 1 if a map]

    def fail(message: str):
        raise BundleError(f"{what}: {message} at byte {start}")

    while True:
        start = pos
        if pos >= n:
            fail("truncated msgpack data (ends inside an object)")
        items += 1
        if items > MAX_ITEMS:
            fail(f"more than {MAX_ITEMS} msgpack objects")
        b = data[pos]
        pos += 1
        is_key = bool(stack) and stack[-1][1] == 1 and stack[-1][0] % 2 == 0
        kind = "scalar"
        length = 0
        if b <= 0x7F or b >= 0xE0:
            pass
        elif 0x80 <= b <= 0x8F:
            kind, length = "map", b & 0x0F
        elif 0x90 <= b <= 0x9F:
            kind, length = "array", b & 0x0F
        elif 0xA0 <= b <= 0xBF:
            kind, length = "str", b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b == 0xCA or b == 0xCB:
            size = 4 if b == 0xCA else 8
            if pos + size > n:
                fail("truncated float")
            value = struct.unpack_from(">f" if size == 4 else ">d", data, pos)[0]
            if not math.isfinite(value):
                fail(f"non-finite float {value}")
            pos += size
        elif b in _SIZED:
            kind, width = _SIZED[b]
            if pos + width > n:
                fail(f"truncated {kind} header")
            length = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif b in _EXT:
            fail(f"msgpack extension type (0x{b:02x}) is not allowed in a bundle")
        else:  # 0xC1 is never used by msgpack
            fail(f"invalid msgpack byte 0x{b:02x}")
        if is_key and kind != "str":
            fail(f"map keys must be strings, found msgpack {kind if kind != 'scalar' else f'type 0x{b:02x}'}")
        if kind in ("str", "bin"):
            if length > n - pos:
                fail(f"{kind} claims {length} bytes but only {n - pos} remain")
            pos += length
        elif pos > n:
            fail("truncated msgpack data")
        if kind in ("map", "array"):
            count = length * 2 if kind == "map" else length
            if count > n - pos:  # every object takes at least one byte
                fail(f"{kind} claims {length} entries but only {n - pos} bytes remain")
            if count:
                if len(stack) >= MAX_DEPTH:
                    fail(f"nesting deeper than {MAX_DEPTH}")
                stack.append([count, 1 if kind == "map" else 0])
                continue
        # One object is complete: close every container it finishes.
        while stack:
            stack[-1][0] -= 1
            if stack[-1][0]:
                break
            stack.pop()
        if not stack:
            break
    if pos != n:
        start = pos
        fail(f"{n - pos} trailing bytes after the msgpack data")


def _unpack(data: bytes, what: str) -> Any:
    scan(data, what)
    n = len(data)
    try:
        # The scan already enforced everything below; these limits are a second line of defence.
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
            object_pairs_hook=_unique_map,
            max_bin_len=n,
            max_str_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=0,
        )
    except BundleError as exc:
        raise BundleError(f"{what}: {exc}") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, MemoryError, OverflowError) as exc:
        # e.g. a str that is not valid UTF-8
        raise BundleError(f"{what}: malformed msgpack ({type(exc).__name__}: {exc or 'no detail'})") from None


def _reject_ext(code: int, data: bytes):
    raise BundleError(f"msgpack extension type {code} is not allowed in a bundle")


def _unique_map(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"duplicate key {key!r:.80} in a msgpack map")
        result[key] = value
    return result


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
    if len(data) > MAX_FILE_BYTES:
        raise BundleError(f"{source}: {len(data):,} bytes is larger than any bundle can be ({MAX_FILE_BYTES:,})")
    if not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise BundleError(f"{source}: not a cnnkit bundle (it does not start with a msgpack map)")
    outer = _unpack(data, source)
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
    body = _unpack(payload, where)
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
    return Bundle((major, minor), spec, classes, providers, training, weights, digest.hex())


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


def weight_fingerprint(array: np.ndarray) -> dict[str, Any]:
    """sha256 of the weight's stored bytes (little-endian, C order) and the sum of its values.

    The sum adds the values as float64 one by one in storage order (no pairwise or compensated
    summation), so any reader that follows docs/FORMAT.md gets exactly the same number.
    """
    array = np.asarray(array)
    stored = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    flat = array.reshape(-1).astype(np.float64)
    total = float(np.cumsum(flat)[-1]) if flat.size else 0.0
    return {"sha256": hashlib.sha256(stored.tobytes()).hexdigest(), "sum": total}


def read(path: str | Path) -> Bundle:
    """Read and check a bundle file without importing any layer code."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES and path.is_file():
            raise BundleError(f"{path}: {size:,} bytes is larger than any bundle can be ({MAX_FILE_BYTES:,})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle not found: {path}") from None
    except IsADirectoryError:
        raise BundleError(f"{path} is a directory, not a bundle") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode(data, str(path))


def describe(bundle: Bundle, source: str = "bundle") -> dict[str, Any]:
    """A JSON-ready summary of checked contents (what `cnnkit inspect` shows); imports no layer code."""
    spec = bundle.spec
    matches = provenance.resolve(spec["layers"], bundle.providers)  # entry-point metadata only
    layers = []
    for i, layer in enumerate(spec["layers"]):
        provider = bundle.providers[layer["type"]]
        found = matches[layer["type"]]
        count = sum(int(w.size) for name, w in bundle.weights.items() if name.partition(".")[0] == str(i))
        layers.append({"index": i, "type": layer["type"], "config": {k: v for k, v in layer.items() if k != "type"},
                       "params": count, "provider": f"{provider['dist']} {provider['version']}",
                       "installed": found.installed.provider if found.installed else None, "provenance": found.status})
    weights = [{"name": name, "dtype": w.dtype.name, "shape": list(w.shape), "size": int(w.size), "bytes": int(w.nbytes), **weight_fingerprint(w)}
               for name, w in bundle.weights.items()]
    return {
        "source": source,
        "format": FORMAT,
        "version": f"{bundle.version[0]}.{bundle.version[1]}",
        "sha256": bundle.sha256,
        "name": spec.get("name"),
        "input_shape": spec["input"]["shape"],
        "preprocess": spec["input"].get("preprocess"),
        "classes": bundle.classes,
        "layers": layers,
        "total_params": sum(w["size"] for w in weights),
        "providers": bundle.providers,
        "train": spec.get("train"),
        "training": bundle.training,
        "weights": weights,
    }


# --------------------------------------------------------------------------------------------------
# Building a model


def model_from_bundle(bundle: Bundle, source: str = "bundle", *, allow_provider_mismatch: bool = False):
    """Build a Model from checked contents: providers checked, spec re-validated, weights matched.

    Each layer type must come from the distribution the bundle recorded (see cnnkit.provenance);
    another version of it loads with a ProviderMismatchWarning, another distribution only with
    ``allow_provider_mismatch=True`` (and a warning).
    """
    from .model import Model
    from .spec import validate_spec

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
        spec = validate_spec(spec_data)
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
