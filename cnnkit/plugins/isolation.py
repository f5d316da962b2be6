"""A plugin's import, kept away from the command's output and from ending the process.

While a plugin module is imported (``Registry.load_entry``), ``plugin_import()``:

- points file descriptor 1 at descriptor 2, and ``sys.stdout`` at ``sys.stderr``, so whatever the
  plugin writes (``print``, ``os.write(1, ...)``, a C library's ``printf``) goes to stderr and
  ``--json`` output on stdout stays valid. C stdio buffers are flushed before descriptor 1 is
  restored, so buffered C output lands on stderr too, not after the JSON;
- turns ``os._exit(n)`` called by the importing thread into an ``ExitDuringImport`` exception, which
  the registry reports as that plugin's import failure (like ``sys.exit``), so the command goes on
  and never ends with exit 0 and no output.

What no Python code can stop still ends the process (a plugin calling the C library's ``_exit``
through ctypes, a signal it sends itself, a crash in its extension module); those end it with a
non-zero status, except C ``_exit(0)``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.RLock()  # one import at a time changes the process's descriptors
_depth = 0  # nested plugin imports (a plugin importing another) keep the outermost redirection


class ExitDuringImport(Exception):
    """A plugin called ``os._exit`` while it was being imported."""


def _flush_c_stdio() -> None:
    """fflush(NULL): write out what C code buffered for any stdio stream (POSIX C libraries)."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (Windows): nothing buffered there by cnnkit
        pass


def _flush(*streams) -> None:
    for stream in streams:
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing to keep from it
            pass


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    _flush(sys.stdout, sys.__stdout__)
    _flush_c_stdio()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 (a daemon): nothing to protect
        saved = None
    if saved is not None:
        try:
            os.dup2(2, 1)
        except OSError:  # no descriptor 2: keep 1 as it is
            os.close(saved)
            saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush(sys.stdout, sys.__stdout__, sys.stderr)
        _flush_c_stdio()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def _exit_trapped() -> Iterator[None]:
    real_exit = os._exit
    importer, pid = threading.get_ident(), os.getpid()

    def trapped_exit(code: int) -> None:
        if threading.get_ident() == importer and os.getpid() == pid:
            raise ExitDuringImport(f"it called os._exit({code!r}) while being imported (cnnkit stopped the exit)")
        real_exit(code)  # another thread, or a forked child: exit as asked

    holders = [m for m in (os, sys.modules.get("posix"), sys.modules.get("nt")) if m is not None]  # os._exit is posix._exit
    for module in holders:
        module._exit = trapped_exit
    try:
        yield
    finally:
        for module in holders:
            module._exit = real_exit


@contextlib.contextmanager
def plugin_import() -> Iterator[None]:
    """The context a plugin module is imported in (see the module docstring)."""
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        _depth = 1
        try:
            with _stdout_to_stderr(), _exit_trapped():
                yield
        finally:
            _depth = 0
