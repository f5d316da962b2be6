"""The byte pre-scanner: walk msgpack bytes without building objects, then unpack with the same limits.

Before msgpack allocates anything, :func:`scan` rejects ext types, non-string map keys, non-finite
floats, nesting deeper than ``MAX_DEPTH`` and any container that claims more items than the bytes
left could hold (so no allocation is ever larger than the file).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack

from ..errors import BundleError

MAX_DEPTH = 32  # containers inside containers; a real bundle nests about 6 deep
MAX_ITEMS = 1 << 20  # msgpack objects in one map (outer or payload); weights are one bin each

# Fixed-width msgpack types: first byte -> bytes after the first byte.
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


def unpack(data: bytes, what: str) -> Any:
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
