"""Output files that are never clobbered or torn: check the target first, then write it atomically.

The rules (README "Output files"): the target must be a regular file or not exist; devices, FIFOs,
sockets and folders are never replaced; a regular file that is not ours (``recognise`` says no) and
a read-only file are replaced only with ``force``; a symlink is followed (the file it points to is
replaced, the link stays); a name ending in "/" names a folder and is refused. :func:`check_target`
also tries the folder (a probe temp file catches permissions, read-only mounts and names too long)
and the free space, so a command can call it before hours of training.

:func:`write_atomic` writes a temp file in the same folder, fsyncs it and renames it over the
target: readers see the old file or the new one. A failure or an exception (Ctrl-C, or SIGTERM
turned into one by the CLI) removes the temp file; temp files of processes that died without
cleaning up (kill -9) are swept by the next write into the same folder.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import CnnkitError
from ..files import file_kind

# Every temp file of ours ends so; the pid inside lets a later writer tell whether its owner is alive.
TEMP_SUFFIX = ".cnnkit-tmp"
_TEMP = re.compile(r"\..*\.([0-9]{1,10})\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX), re.DOTALL)
_TEMP_EXTRA = len(f"..{2**22}.{'0' * 8}{TEMP_SUFFIX}")  # bytes a temp name adds to the file name


class OutputError(CnnkitError):
    """An output path that cannot or must not be written."""


class InterruptedAfterWrite(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) arrived after the new file was renamed into place: the write is complete."""

    def __init__(self, path: Path, signal_exception: BaseException):
        super().__init__(str(path))
        self.path = path
        self.signal_exception = signal_exception


def check_target(
    path: str | os.PathLike,
    *,
    force: bool = False,
    recognise: Callable[[Path], bool] | None = None,
    what: str = "file",
    size_hint: int = 0,
    example: str = "model.cnnkit",
) -> Path:
    """The path to write for ``path`` (symlinks followed), or OutputError saying why it must not be written.

    ``recognise(path)`` says whether an existing regular file is one of ours (e.g. a bundle), which
    may be replaced without ``force``; ``what`` names such files in messages. ``size_hint`` is the
    expected size in bytes, checked against the free space of the folder. ``example`` is the file
    name suggested when ``path`` names a folder (model.cnnkit, schema.json, ...).
    """
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        raw = os.fsdecode(raw)
    if not raw or raw.endswith(("/", os.sep)) or Path(raw).name in ("", ".", ".."):
        raise OutputError(f"cannot write {raw!r}: it names a folder; give a file name such as {os.path.join(raw or '.', example)}")
    target = Path(os.path.realpath(raw)) if os.path.islink(raw) else Path(raw)
    shown = raw if target == Path(raw) else f"{raw} (a symlink to {target})"
    folder = target.parent
    name_max = _name_max(folder)
    if len(os.fsencode(target.name)) > name_max:
        raise OutputError(f"cannot write {shown}: the file name is {len(os.fsencode(target.name))} bytes, more than the {name_max} its folder allows")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {shown}: it is a directory; give a file name such as {target / example}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"cannot write {shown}: it is a {file_kind(st.st_mode)}, not a regular file; refusing to replace it")
        if not force and recognise is not None and not recognise(target):
            raise OutputError(f"refusing to overwrite {shown}: it exists and is not a {what} (--force replaces it; in Python: force=True)")
        if not force and not st.st_mode & 0o222:
            raise OutputError(f"refusing to overwrite {shown}: it is read-only (--force replaces it; in Python: force=True)")
    if not folder.is_dir():
        raise OutputError(f"cannot write {shown}: folder {folder} does not exist")
    probe = _temp_name(target)
    try:  # the one reliable test of "can I create a file here" (permissions, read-only mounts, quotas)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: cannot create a file in {folder}: {exc.strerror or exc}") from None
    if size_hint:
        remove_stale_temps(folder)  # a killed writer's leftovers hold space this write may need
        free = _free_bytes(folder)
        if free is not None and free < size_hint:
            raise OutputError(f"cannot write {shown}: it needs about {_mb(size_hint)} but only {_mb(free)} are free in {folder}")
    return target


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    Readers see the old file or the new one, never a mix. The caller checks the target's policy
    (:func:`check_target`); this only refuses what a rename would destroy (a device, a folder).
    An exception arriving after the rename becomes :class:`InterruptedAfterWrite`.
    """
    path = Path(path)
    if os.path.islink(path):
        path = Path(os.path.realpath(path))
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {path}: it is a {file_kind(path.stat().st_mode)}, not a regular file; refusing to replace it")
    remove_stale_temps(folder)
    tmp = _temp_name(path)
    # os.open with 0o666 lets the umask decide the final mode, as a plain open() would (mkstemp: 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as exc:
        if os.path.lexists(tmp):
            tmp.unlink(missing_ok=True)
        elif isinstance(exc, KeyboardInterrupt) and not isinstance(exc, InterruptedAfterWrite):
            raise InterruptedAfterWrite(path, exc) from None  # the rename happened: the file is complete
        raise
    return path


def remove_stale_temps(folder: Path) -> None:
    """Delete our temp files in ``folder`` whose writer process is gone (killed before it could clean up)."""
    try:
        candidates = list(os.scandir(folder))
    except OSError:
        return
    for entry in candidates:
        match = _TEMP.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
            except OSError:
                pass
        except (PermissionError, OverflowError, OSError):
            pass  # alive under another user, or not a pid we can ask about: leave it


def _temp_name(path: Path) -> Path:
    # The file name is shortened so the temp name fits where the final name fits (255 bytes).
    budget = max(1, _name_max(path.parent) - _TEMP_EXTRA)
    stem = os.fsdecode(os.fsencode(path.name)[:budget])
    return path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def free_space(path: str | os.PathLike) -> int | None:
    """Bytes free for an unprivileged writer where ``path`` is, or would be created (its nearest existing parent); None if unknown."""
    path = Path(os.path.abspath(path))
    while path != path.parent:
        try:
            if path.exists():
                break
        except OSError:  # a name too long, say: whoever creates it says so; the space is its parent's
            pass
        path = path.parent
    return _free_bytes(path)


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems cannot fsync a folder)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
