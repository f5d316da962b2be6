"""Array files without pickle: .npy files, .npz archives (memory-mapped when stored uncompressed) and cnnkit's user cache.

An .npy header is read and checked before NumPy loads anything: a file that is no .npy would
otherwise reach NumPy's pickle fallback, whose advice (``allow_pickle=``, ``pickle.load()``) is
exactly what cnnkit never does.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import looks_like


# How a damaged .npz shows itself: zipfile's and zlib's errors, and those of numpy's header parser
# (it tokenizes the header's Python literal: a flipped bit can end it mid-statement).
_BROKEN = (OSError, ValueError, SyntaxError, TypeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, tokenize.TokenError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def cache_root() -> Path:
    """Per-user cache: $XDG_CACHE_HOME/cnnkit (default ~/.cache/cnnkit)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnkit"


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype an .npy stream's header claims; the stream is left at the data."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 field names of structured dtypes, which hold no pixels
        raise ValueError(f".npy format version {version[0]}.{version[1]}; cnnkit reads versions 1.0 and 2.0 (what np.save writes)")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(fh)


def read_npy(path: str | Path) -> np.ndarray:
    """The array of the .npy file ``path``, loaded with ``allow_pickle=False`` once its header is checked.

    A file that does not start with the .npy magic string is a DataError saying what it looks like instead (a
    PNG renamed, say); an object array is refused before anything is read; a header claiming more
    bytes than the file holds is refused before any allocation.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if head.startswith(b"\x93NUMPY"):
                fh.seek(0)
                shape, _, dtype = _npy_header(fh)
                held = os.fstat(fh.fileno()).st_size - fh.tell()
    except _BROKEN as exc:
        raise DataError(f"{path}: not a readable .npy array: {_one_line(exc)}") from None
    if not head.startswith(b"\x93NUMPY"):
        kind = looks_like(head)
        raise DataError(f"{path}: not a .npy file ({'it looks like ' + kind if kind else 'it does not start with the .npy magic string'})")
    if dtype.hasobject:
        raise DataError(f"{path}: an object array (dtype {dtype}); cnnkit reads .npy without pickle, so save plain numbers (e.g. x.astype(np.uint8))")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > held:
        raise DataError(f"{path}: its header claims shape {list(shape)} ({claimed:,} bytes) but the file holds {held:,} bytes of data; "
                        f"it is damaged or was not written by np.save")
    try:
        return np.load(path, allow_pickle=False)
    except _BROKEN as exc:
        raise DataError(f"{path}: not a readable .npy array: {_one_line(exc)}") from None


def read_npz(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = (), mmap: bool = True) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file, loaded with ``allow_pickle=False``.

    An array stored uncompressed (``np.savez``) is memory-mapped when ``mmap`` is true, so it costs
    no memory until read; compressed ones (``np.savez_compressed``) are read into memory. Object
    arrays are refused before anything is read. A missing required array is a DataError listing
    what the file holds.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (*_BROKEN, NotImplementedError) as exc:  # NotImplementedError: a compression zipfile lacks
        raise DataError(f"{path}: not a readable .npz file: {_one_line(exc)}") from None
    with archive:
        members = {name[:-4]: archive.getinfo(name) for name in archive.namelist() if name.endswith(".npy")}
        missing = [key for key in required if key not in members]
        if missing:
            raise DataError(f"{path}: no array {', '.join(missing)}; the file holds {', '.join(sorted(members)) or 'no arrays'} "
                            f"(expected {', '.join(required)}{' and optionally ' + ', '.join(optional) if optional else ''})")
        out = {}
        for key in (*required, *(k for k in optional if k in members)):
            out[key] = _member(path, archive, key, members[key], mmap)
    return out


def _member(path: Path, archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, mmap: bool) -> np.ndarray:
    """One array, after its header's claims are checked against the bytes the member holds: a header
    claiming 3e9 images must not reach an allocation or a memory map of that size."""
    try:
        with archive.open(info) as fh:
            shape, fortran, dtype = _npy_header(fh)
            header_length = fh.tell()
    except _BROKEN as exc:
        raise DataError(f"{path}: array {key!r} is not a readable .npy member: {_one_line(exc)}") from None
    if dtype.hasobject:
        raise DataError(f"{path}: array {key!r} is an object array (dtype {dtype}); cnnkit reads .npz without pickle, "
                        f"so save plain numeric or string arrays (e.g. x.astype(np.uint8))")
    claimed, held = math.prod(shape) * dtype.itemsize, info.file_size - header_length
    if claimed > held:
        raise DataError(f"{path}: array {key!r} claims shape {list(shape)} ({claimed:,} bytes) but its .npy member holds {held:,}; "
                        f"the file is damaged or was not written by np.savez")
    if mmap and not fortran and info.compress_type == zipfile.ZIP_STORED and claimed > 0:
        offset = _data_offset(path, info) + header_length
        if offset + claimed > path.stat().st_size:  # the zip's directory overstates the member
            raise DataError(f"{path}: array {key!r} claims {claimed:,} bytes from byte {offset:,}, past the end of the file ({path.stat().st_size:,} bytes)")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: array {key!r} is an object array; cnnkit reads .npz without pickle, so save plain numeric or string arrays") from None
        raise DataError(f"{path}: array {key!r} cannot be read: {_one_line(exc)}") from None
    except _BROKEN as exc:
        raise DataError(f"{path}: array {key!r} cannot be read: {_one_line(exc)}") from None


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header (30 bytes, name, extra field)."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DataError(f"{path}: corrupt zip entry for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` uncompressed (so they can be memory-mapped) to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
