"""Reader for the IDX format of (Fashion-)MNIST, raw or gzip-compressed, checked byte for byte."""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Fashion-MNIST's largest file is 47 MB unpacked; the cap keeps a tiny hostile .gz from filling memory.
MAX_DECOMPRESSED = 512 << 20


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when the file starts with the gzip magic (whatever its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
                data = stream.read(MAX_DECOMPRESSED + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data: {exc}") from None
        if len(data) > MAX_DECOMPRESSED:
            raise DataError(f"{path}: decompresses to more than {MAX_DECOMPRESSED >> 20} MiB; refusing a possible gzip bomb")
        return data
    return raw


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes: 2 zero bytes, a type code, the number of dims, big-endian uint32 dims, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number). Received first bytes: {data[:4].hex() or 'none'}")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX type code 0x{code:02x}; expected one of {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header: {ndim} dimensions need {header} bytes, the file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{source}: IDX dims {list(dims)} need {expected} data bytes, the file has {len(data) - header}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a native-endian numpy array."""
    return parse_idx(read_bytes(path), str(path))


def map_idx(path: str | Path) -> np.ndarray:
    """An IDX file as an array; a raw (not gzipped) byte-valued file is memory-mapped rather than read.

    The header is checked exactly as :func:`parse_idx` checks it; gzipped files and multi-byte
    types (stored big-endian) are read whole with :func:`read_idx`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or IDX_DTYPES.get(head[2]) not in (">u1", ">i1"):
                return read_idx(path)  # gzip, not IDX, or a wide type: the full reader says what is wrong
            header = head + fh.read(4 * head[3])
            size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(header) < 4 + 4 * head[3]:
        return read_idx(path)
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(head[3]))
    if size - len(header) != math.prod(dims) or math.prod(dims) == 0:
        return read_idx(path)  # the size error, or an empty array (which cannot be mapped)
    return np.memmap(path, dtype=np.dtype(IDX_DTYPES[head[2]]), mode="r", offset=len(header), shape=dims)
