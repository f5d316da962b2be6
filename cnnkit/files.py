"""Reading input files safely: regular files only, opened without blocking, read up to a size cap.

A FIFO would block a reader forever and /dev/zero never ends, so every file cnnkit reads as a whole
(specs, bundles, images) goes through :func:`read_regular`, which names the kind of file it refused.
:func:`looks_like` names a file by its first bytes, so that a picture given where a bundle or an
.npy belongs is called a picture, not a broken bundle or pickled data.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CnnkitError

# Bytes read at a time from a file that is longer than fstat said when it was opened.
READ_CHUNK = 1 << 20

# First bytes of the files people give cnnkit by mistake, and what to call them.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"PK\x03\x04", "a zip archive (an .npz array file?)"),
    (b"PK\x05\x06", "an empty zip archive"), (b"\x1f\x8b", "gzip-compressed data"),
)


def file_kind(mode: int) -> str:
    """'regular file', 'directory', 'FIFO (named pipe)', 'character device', ... for an st_mode."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _not_a(what: str) -> str:
    return f"not {_a(what)}"


def check_regular(path: str | os.PathLike, what: str, error: type[CnnkitError]) -> os.stat_result:
    """stat ``path`` and insist on a regular file; the error names what the path is instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"file not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is a {file_kind(st.st_mode)}, {_not_a(what)}")
    return st


def read_regular(path: str | os.PathLike, what: str, error: type[CnnkitError], max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), else one ``error`` naming the problem.

    The file is opened with O_NONBLOCK and checked with fstat on the open descriptor, so a path
    swapped for a FIFO between a check and the open still cannot block.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, {_not_a(what)}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{path} is a {file_kind(st.st_mode)}, {_not_a(what)}")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > max_bytes:
            raise error(f"{path}: {st.st_size:,} bytes is more than {_a(what)} may have ({max_bytes:,})")
        try:
            # What fstat says is there, plus one byte to notice growth: a buffered read allocates its
            # whole size up front, so asking for max_bytes would need 4 GiB of address space for a
            # 50 KB bundle (and fail under `ulimit -v` or in a memory-capped container).
            data = fh.read(st.st_size + 1)
            if len(data) > st.st_size:  # it grew, or reports no size (/proc): read on, still bounded
                parts, total = [data], len(data)
                while total <= max_bytes and (part := fh.read(READ_CHUNK)):
                    parts.append(part)
                    total += len(part)
                data = b"".join(parts)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # it grew while we read
        raise error(f"{path}: more than {max_bytes:,} bytes, more than {_a(what)} may have")
    return data


def looks_like(head: bytes) -> str | None:
    """What a file starting with ``head`` seems to be ("a PNG image", "a NumPy .npy array", ...), or
    None: pictures Pillow reads, .npy, zip (.npz), gzip, and ONNX models (a protobuf ModelProto starts
    with its ir_version field, 0x08 and a small version, then the tag of a later field)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[:2] == b"BM" and head[6:10] == bytes(4):  # "BM", the file size, four reserved zero bytes
        return "a BMP image"
    if len(head) >= 3 and head[0] == 0x08 and 3 <= head[1] <= 15 and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42):
        return "an ONNX model"
    return None


def read_head(path: str | os.PathLike, size: int = 64) -> bytes:
    """The first ``size`` bytes of the regular file ``path``, or b"" when it is missing, unreadable or
    not a regular file: a cheap look at a file's type that cannot block on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return b""
    try:
        return os.read(fd, size) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)
