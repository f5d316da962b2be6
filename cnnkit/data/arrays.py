"""Array files without pickle: .npz archives (memory-mapped when stored uncompressed) and cnnkit's user cache."""

from __future__ import annotations

import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError


def cache_root() -> Path:
    """Per-user cache: $XDG_CACHE_HOME/cnnkit (default ~/.cache/cnnkit)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnkit"


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
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None
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
    try:
        with archive.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                shape, fortran, dtype = None, True, None  # a newer header: np.load below reads it
            header_length = fh.tell()
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: array {key!r} is not a readable .npy member: {exc}") from None
    if dtype is not None and dtype.hasobject:
        raise DataError(f"{path}: array {key!r} is an object array (dtype {dtype}); cnnkit reads .npz without pickle, "
                        f"so save plain numeric or string arrays (e.g. x.astype(np.uint8))")
    if mmap and dtype is not None and not fortran and info.compress_type == zipfile.ZIP_STORED and np.prod(shape) > 0:
        return np.memmap(path, dtype=dtype, mode="r", offset=_data_offset(path, info) + header_length, shape=shape)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: array {key!r} is an object array; cnnkit reads .npz without pickle, so save plain numeric or string arrays") from None
        raise DataError(f"{path}: array {key!r} cannot be read: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: array {key!r} cannot be read: {exc}") from None


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
