"""Run the parts of a batch on separate cores with threads.

numpy releases the GIL inside copies, ufuncs and matrix products, so Python threads that each run
the model on their own slice of a batch run on separate cores. ``Model.forward`` uses this to split
big batches (see ``Model.forward``).

BLAS must then stay in the thread that calls it. numpy's OpenBLAS would otherwise start its own
threads for larger products, and those threads keep spinning on the cores for a while after each
product, where they compete with ours (measured: splitting with BLAS free was slower than not
splitting at all). So while a model runs (``Model.forward`` and its backprop, split or not),
OpenBLAS is set to one thread, and set back when the last user finishes: cnnkit splits the work
itself (batches by samples, convolutions by images or tile rows). Even unsplit, two BLAS threads
on a net's small products cost more than they give (measured on the best net at batch 1: 117
images/s with OpenBLAS's two threads, 708 with one). If numpy's BLAS is not an OpenBLAS that cnnkit can find, cnnkit does not
split, and BLAS does its own threading as before.

``CNNKIT_NUM_THREADS`` sets how many threads cnnkit uses (default: the cores this process may run
on); ``CNNKIT_NUM_THREADS=1`` runs everything in the calling thread. An explicit value above 1 is
used even when the BLAS cannot be controlled.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import glob
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import CnnkitError

T = TypeVar("T")


# -- BLAS threads -----------------------------------------------------------------------------------


class _OpenBLAS:
    """The thread-count functions of the OpenBLAS library loaded in this process."""

    # Symbol spellings: numpy's wheels bundle scipy-openblas (prefixed, "64_" for 64-bit integers);
    # a system OpenBLAS uses the plain names.
    NAMES = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
             ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
             ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
             ("openblas_set_num_threads", "openblas_get_num_threads")]

    def __init__(self, set_threads, get_threads):
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        get_threads.argtypes, get_threads.restype = [], ctypes.c_int
        self.set, self.get = set_threads, get_threads

    @classmethod
    def find(cls) -> _OpenBLAS | None:
        for path in _openblas_paths():
            try:
                lib = ctypes.CDLL(path)  # already loaded by numpy: this returns the same library
            except OSError:
                continue
            for set_name, get_name in cls.NAMES:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    return cls(getattr(lib, set_name), getattr(lib, get_name))
        return None


def _openblas_paths() -> list[str]:
    """Paths of OpenBLAS libraries this process has loaded (Linux), then those bundled with numpy."""
    import numpy

    paths: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if "openblas" in Path(path).name.lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    root = Path(numpy.__file__).parent
    for pattern in ("numpy.libs/*openblas*", "numpy/.dylibs/*openblas*"):  # Linux/Windows wheels, macOS wheels
        paths += sorted(glob.glob(str(root.parent / pattern)))
    return paths


@functools.cache
def _openblas() -> _OpenBLAS | None:
    return _OpenBLAS.find()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 1


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS uses one thread inside this block (nestable, thread-safe; restored by the last to leave)."""
    global _blas_users, _blas_saved
    blas = _openblas()
    if blas is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = blas.get()
            if _blas_saved != 1:
                blas.set(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_saved != 1:
                blas.set(_blas_saved)


# -- cnnkit's threads -------------------------------------------------------------------------------


@functools.cache
def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def num_threads() -> int:
    """Threads cnnkit splits a batch over: ``$CNNKIT_NUM_THREADS``, else the usable cores (1 when
    numpy's BLAS threads cannot be controlled)."""
    value = os.environ.get("CNNKIT_NUM_THREADS", "").strip()
    if not value:
        return _usable_cores() if _openblas() is not None else 1
    try:
        count = int(value, 10)
    except ValueError:
        count = 0
    if count < 1 or not value.isdecimal():
        raise CnnkitError(f"CNNKIT_NUM_THREADS must be a positive integer. Received: {value!r}")
    return count


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_local = threading.local()  # .busy: this thread is running one of cnnkit's tasks


def _workers(count: int) -> ThreadPoolExecutor:
    """A pool of at least ``count`` threads. A bigger one replaces it without shutting it down: a
    run_all in another thread may still be submitting to it (its idle threads exit once it is
    garbage-collected)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            _pool, _pool_size = ThreadPoolExecutor(count, thread_name_prefix="cnnkit"), count
        return _pool


def _after_fork_in_child() -> None:
    # A forked child has only the forking thread: the pool's threads, a lock another thread held,
    # and a BLAS user count are the parent's. Start afresh.
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users
    _pool, _pool_size = None, 0
    _pool_lock, _blas_lock = threading.Lock(), threading.Lock()
    if _blas_users and _blas_saved != 1 and _openblas() is not None:
        _openblas().set(_blas_saved)  # forked inside a run_all: give the child its BLAS threads back
    _blas_users = 0
    _local.busy = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run_marked(task: Callable[[], T]) -> T:
    _local.busy = True
    try:
        return task()
    finally:
        _local.busy = False


_load_checked = (-1.0, False)  # (monotonic time, answer)


def spare_cores() -> bool:
    """Whether this machine has cores to spare for a split that does not have to happen: the 1-minute
    load average (which counts cnnkit's own threads) is below threads + 1. Checked at most once a
    second; True where the OS reports no load average. Only for splits that cannot change results."""
    global _load_checked
    now = time.monotonic()
    if now - _load_checked[0] >= 1.0:
        try:
            answer = os.getloadavg()[0] < num_threads() + 1
        except (AttributeError, OSError):
            answer = True
        _load_checked = (now, answer)
    return _load_checked[1]


def in_task() -> bool:
    """True inside one of cnnkit's parallel tasks, where run_all runs its tasks one after another."""
    return getattr(_local, "busy", False)


def run_all(tasks: list[Callable[[], T]]) -> list[T]:
    """Each task's result, in order: the first task runs in the calling thread, the others in
    cnnkit's worker threads, all with OpenBLAS kept to one thread. Tasks must not write where another
    task reads or writes. Called from inside a task, the tasks simply run one after another."""
    if len(tasks) <= 1 or getattr(_local, "busy", False):
        return [task() for task in tasks]
    with single_threaded_blas():
        pool = _workers(len(tasks) - 1)
        # Each task runs in a copy of the caller's context, so numpy's error state (np.errstate) holds there too.
        futures = [pool.submit(contextvars.copy_context().run, _run_marked, task) for task in tasks[1:]]
        try:
            first = _run_marked(tasks[0])
        finally:
            wait(futures)  # every task finishes before anyone reads the results, even if ours raised
        return [first, *(f.result() for f in futures)]
