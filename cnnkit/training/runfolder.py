"""The run folder: ``runs/<name>/`` with the resolved spec, history.csv, last.cnnkit and best.cnnkit.

``start_run`` makes a new numbered folder (``runs/<name>``, then ``runs/<name>-2``, … — an earlier run
is never overwritten); ``train_in_folder`` trains with a checkpoint (``last.cnnkit``, checkpoint.py)
written atomically at each epoch end and whenever a stop is asked for (Ctrl-C, SIGTERM: signals.py),
and resume.py goes on from a folder's last checkpoint to the same final bundle an uninterrupted run
writes (same thread count). With a validation split, ``best.cnnkit`` is the plain bundle of the best
epoch so far; ``delivered.json`` records the final bundle (path, checksum). A checkpoint, history or
best.cnnkit that cannot be written (a full disk) is a warning: training goes on, and the final bundle
is still written; ``check_room`` refuses a folder without room for them before training starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bundle import estimated_size, read, save, write_atomic
from ..bundle.atomic import free_space
from ..data.fashion_mnist import Dataset
from ..errors import BundleError, CnnkitError, CnnkitWarning
from ..files import read_regular
from ..runtime.model import Model
from .checkpoint import save_checkpoint
from .checkpoint_check import check_position, optimizer_state_names
from .health import TrainingDiverged
from .history import EpochRecord, training_metadata
from .loop import Hooks, Interrupted, TrainState, fit, fresh_optimizer
from .steppers import Stepper, make_stepper

SPEC_FILE, HISTORY_FILE, LAST, BEST = "spec.json", "history.csv", "last.cnnkit", "best.cnnkit"
DELIVERED = "delivered.json"  # the final bundle's path and checksum
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1",
                   "lr", "images_per_second", "seconds")


def start_run(base: str | Path, name: str, spec_dict: dict[str, Any]) -> Path:
    """Create ``base/<name>`` (or the first free ``base/<name>-N``) holding the resolved spec; returns it."""
    base = Path(base)
    stem = Path(name).name or "run"
    try:  # even a look at base can fail (a name too long): OSError below
        if base.exists() and not base.is_dir():  # mkdir would say only "File exists"
            raise CnnkitError(f"cannot create a run folder in {base}: it is a file, not a folder (--run-dir, CNNKIT_RUN_DIR)")
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = base / (stem if n == 1 else f"{stem}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            write_atomic(folder / SPEC_FILE, (json.dumps(spec_dict, indent=2) + "\n").encode())
            return folder
    except OSError as exc:
        raise CnnkitError(f"cannot create a run folder in {base}: {exc.strerror or exc}") from None
    raise CnnkitError(f"{base} already holds 9999 runs named {stem!r}; give another --run-dir")


def discard_unstarted(folder: Path) -> None:
    """Remove a run folder that holds nothing but the spec start_run wrote (training failed before
    its first checkpoint), so a failed run neither leaves an empty folder nor takes the next name.
    A folder holding anything else is left alone."""
    try:
        if [p.name for p in folder.iterdir()] == [SPEC_FILE]:
            (folder / SPEC_FILE).unlink()
            folder.rmdir()
    except OSError:
        pass


def write_history(folder: Path, history: list[EpochRecord], examples: int) -> None:
    """history.csv, rewritten whole (atomically) at each epoch end: one row per epoch, empty cells for figures a run lacks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for r in history:
        row = {**r.row(), "seconds": r.seconds, "images_per_second": examples / r.seconds if r.seconds > 0 else None}
        writer.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]) for c in HISTORY_COLUMNS])
    write_atomic(folder / HISTORY_FILE, out.getvalue().encode())


class RunHooks(Hooks):
    """Checkpoints and history.csv at each epoch end; a checkpoint and a stop when ``stop_requested()``.

    ``saved`` is the (epoch, step) of the checkpoint in the folder (None: none yet). A write that
    fails is a warning (through ``warn``, once until a write succeeds again): training goes on."""

    def __init__(self, folder: Path, model: Model, data: Dataset, stop_requested: Callable[[TrainState], bool] | None = None,
                 warn: Callable[[str], None] | None = None, saved: tuple[int, int] | None = None, engine: dict[str, Any] | None = None):
        self.folder, self.model, self.data, self.engine = folder, model, data, engine
        self.stop_requested = stop_requested or (lambda state: False)
        self.warn = warn or (lambda message: warnings.warn(CnnkitWarning(message), stacklevel=2))
        self.saved = saved
        self.failed: str | None = None  # why the last checkpoint write failed, until one succeeds
        self.warned: set[str] = set()
        self.checkpoint_bytes = 0
        self.checkpoint_seconds = 0.0
        n, size = int(len(data.train_labels)), model.spec.data.validation
        # the training examples per epoch: what stratified_split leaves of the training set
        self.train_examples = n if size is None else n - (size if isinstance(size, int) else round(size * n))

    def on_disk(self) -> str:
        """Where a resume of the folder would start, in words."""
        if self.saved is None:
            return f"{self.folder} holds no checkpoint yet"
        epoch, step = self.saved
        return f"{self.folder / LAST} holds the run {f'at epoch {epoch}, step {step}' if step else f'after epoch {epoch - 1}'}"

    def checkpoint(self, state: TrainState) -> bool:
        started = time.perf_counter()
        self.model.metadata = {**run_metadata(self.model, self.data, state.history, self.engine), "train_examples": self.train_examples}
        self.model.metadata["metrics"] = {k: v for k, v in self.model.metadata["metrics"].items() if v is not None}
        try:
            self.checkpoint_bytes = save_checkpoint(self.model, state, self.folder / LAST)
        except BundleError as exc:
            if self.failed is None:
                self.warn(f"{exc}; training goes on, and each epoch's end tries again ({self.on_disk()})")
            self.failed = str(exc)
            return False
        self.failed, self.saved = None, (state.epoch, state.step)
        self.checkpoint_seconds = time.perf_counter() - started
        return True

    def should_stop(self, state: TrainState) -> bool:
        return self.stop_requested(state)

    def save(self, state: TrainState) -> bool:
        return self.checkpoint(state)

    def after_epoch(self, state: TrainState, record: EpochRecord) -> None:
        self.checkpoint(state)
        self._try("history.csv", lambda: write_history(self.folder, state.history, self.train_examples))
        if state.monitor is not None and state.monitor.best_epoch == record.epoch:
            self._try("best.cnnkit", lambda: save(self.model, self.folder / BEST))

    def scoring(self) -> contextlib.AbstractContextManager:
        at_once = getattr(self.stop_requested, "at_once", None)  # signals.StopSignals: a signal stops the scoring at once
        return at_once() if at_once is not None else contextlib.nullcontext()

    def interrupted(self, state: TrainState | None) -> bool:
        if state is not None:
            self.checkpoint(state)
        return True

    def _try(self, what: str, write: Callable[[], Any]) -> None:
        """A run-folder file that cannot be written is a warning (once per file), not the end of training."""
        try:
            write()
        except (OSError, CnnkitError) as exc:
            if what not in self.warned:
                self.warned.add(what)
                self.warn(f"cannot write {self.folder / what}: {getattr(exc, 'strerror', None) or exc}; training goes on")


def train_in_folder(model: Model, data: Dataset, folder: Path, *, state: TrainState | None = None,
                    stop_requested: Callable[[TrainState], bool] | None = None, on_step=None, on_epoch=None,
                    out: Path | None = None, warn: Callable[[str], None] | None = None, stepper: Stepper | None = None) -> RunHooks:
    """Train ``model`` (from ``state`` when resuming) with checkpoints in ``folder``; sets the model's final metadata.

    Raises Interrupted (after writing last.cnnkit) when ``stop_requested`` says so or a KeyboardInterrupt
    arrives (a second Ctrl-C), naming the checkpoint a resume starts from, and TrainingDiverged with
    a message naming the last good checkpoint and how to resume with a lower rate. ``out``, the bundle
    the run was asked to write, goes into the resume command so that it writes the same file.
    ``stepper`` (default: the NumPy runtime) does the steps; under several processes this is rank 0's
    part, and the others run :func:`train_alongside`.
    """
    stepper = stepper or make_stepper()
    hooks = RunHooks(folder, model, data, stop_requested, warn, saved=None if state is None else (state.epoch, state.step), engine=stepper.describe())
    if state is not None:  # the data is loaded now: the checkpoint's position must lie inside one of its epochs
        check_position(state.epoch, state.step, state.examples, model.spec.train.batch_size, hooks.train_examples, f"{folder / LAST}: checkpoint")
    command = resume_command(folder, out)
    try:
        with _deferring(stop_requested):
            history = fit(model, data, on_step=on_step, on_epoch=on_epoch, state=state, hooks=hooks, stepper=stepper)
    except Interrupted as exc:
        stopped = exc.state
        if stopped is not None and hooks.saved == (stopped.epoch, stopped.step):
            raise Interrupted(f"{exc}; checkpoint {folder / LAST}; go on with: {command}", stopped) from None
        raise Interrupted(f"{exc}; its checkpoint could not be written ({hooks.failed}); {_resume_hint(hooks, command)}", stopped) from None
    except KeyboardInterrupt:  # a second signal: at once, in the middle of a step or of the stop's checkpoint
        raise Interrupted(f"stopped at once by a second signal; {_resume_hint(hooks, command)}") from None
    except TrainingDiverged as exc:
        last = folder / LAST
        where = (f"the last good checkpoint {last} stays; resume with a lower rate: {command} "
                 f"--set train.optimizer.lr=<lower>" if hooks.saved else "no epoch finished, so there is no checkpoint")  # the advice is already in exc
        raise TrainingDiverged(f"{exc}; {where}") from None
    model.metadata = run_metadata(model, data, history, stepper.describe())
    return hooks


class _StopOnly(Hooks):
    def __init__(self, stop_requested: Callable[[TrainState], bool] | None):
        self.stop_requested = stop_requested or (lambda state: False)

    def should_stop(self, state: TrainState) -> bool:
        return self.stop_requested(state)


def train_alongside(model: Model, data: Dataset, stepper: Stepper, *, state: TrainState | None = None,
                    stop_requested: Callable[[TrainState], bool] | None = None) -> None:
    """The part of a process other than rank 0 (torchrun): the same steps, no files, no words; it
    asks its own signals whether to stop, and follows rank 0's decisions (Interrupted, as rank 0)."""
    try:
        with _deferring(stop_requested):
            fit(model, data, state=state, hooks=_StopOnly(stop_requested), stepper=stepper)
    except KeyboardInterrupt:
        raise Interrupted("stopped at once by a second signal") from None


def _deferring(stop_requested) -> contextlib.AbstractContextManager:
    deferred = getattr(stop_requested, "deferred", None)  # signals.StopSignals: a signal stops at the end of a step
    return deferred() if deferred is not None else contextlib.nullcontext()


def run_metadata(model: Model, data: Dataset, history, engine: dict[str, Any] | None) -> dict[str, Any]:
    """training_metadata, plus the engine when it is not cnnkit's own runtime."""
    meta = training_metadata(model, data, history)
    if engine is not None:
        meta["backend"] = dict(engine)
    return meta


def resume_command(folder: Path, out: Path | None) -> str:
    return f"cnnkit run --resume {shlex.quote(str(folder))}" + (f" --out {shlex.quote(str(out))}" if out is not None else "")


def _resume_hint(hooks: RunHooks, command: str) -> str:
    return f"{hooks.on_disk()}; go on from there with: {command}" if hooks.saved else f"{hooks.on_disk()}, so there is nothing to resume"


def checkpoint_room(model: Model) -> int:
    """Bytes a run folder needs free for ``model``'s checkpoints: a checkpoint (the bundle, the
    optimizer's per-weight state, the best weights) and best.cnnkit, each twice (the old file stays
    until the new one is complete), and the small files."""
    weights = sum(w.nbytes for w in model.weights.values())
    bundle = estimated_size(weights // 4, model.spec)
    validation = model.spec.data.validation is not None
    kept = len(optimizer_state_names(fresh_optimizer(model))[1]) + (validation and model.spec.train.restore_best is not False)
    return 2 * (bundle + kept * weights + (bundle if validation else 0)) + (64 << 10)


def check_room(folder: Path, need: int) -> None:
    """CnnkitError when the file system of ``folder`` (or of its nearest existing parent) has less than ``need`` bytes free."""
    free = free_space(folder)
    if free is not None and free < need:
        raise CnnkitError(f"cannot train in {folder}: its checkpoints need about {need / 1e6:,.1f} MB but only {free / 1e6:,.1f} MB are free there; "
                          "free some space or give another --run-dir (CNNKIT_RUN_DIR)")


def save_final(model: Model, target: Path, folder: Path, force: bool = False) -> None:
    """Write the final bundle and record it in the run folder (``delivered.json``: its path and
    checksum, what `cnnkit report RUN` reports); if the bundle cannot be written (disk full), say
    that the run folder's last checkpoint is intact."""
    try:
        written = save(model, target, force=force)
    except BundleError as exc:
        raise BundleError(f"{exc}; the run's last checkpoint {folder / LAST} is intact: free space, then write the bundle with "
                          f"cnnkit run --resume {folder} --out {target}") from None
    try:  # best effort: without the record, `cnnkit report RUN` asks for a bundle by name
        record = {"bundle": str(Path(written).resolve()), "sha256": read(written).sha256}
        write_atomic(folder / DELIVERED, (json.dumps(record, indent=2) + "\n").encode())
    except (OSError, CnnkitError):
        pass


def delivered_bundle(folder: str | Path) -> Path:
    """The bundle a finished run wrote, as its run folder recorded it, or one CnnkitError saying why
    not (not finished, gone, replaced by another model since) and naming the run's own bundles."""
    folder = Path(folder)
    own = [f"{folder / name} ({what})" for name, what in ((BEST, "the best epoch"), (LAST, "the last checkpoint")) if (folder / name).is_file()]
    instead = f"; report a bundle by name, e.g. {' or '.join(own)}" if own else ""
    record = folder / DELIVERED
    if not record.is_file():
        raise CnnkitError(f"{folder} records no bundle it delivered (the run has not finished, or finished before cnnkit recorded it){instead}")
    try:
        info = json.loads(read_regular(record, "run record", CnnkitError, 1 << 16))
        path, sha256 = Path(info["bundle"]), info["sha256"]
        if not isinstance(sha256, str):
            raise TypeError(sha256)
        present = path.is_file()
    except (ValueError, KeyError, TypeError, OSError):  # OSError, ValueError: a name too long, a NUL byte
        raise CnnkitError(f"{record} is damaged{instead}") from None
    if not present:
        raise CnnkitError(f"{folder} delivered {path}, which is gone{instead}")
    if read(path).sha256 != sha256:
        raise CnnkitError(f"{folder} delivered {path}, which has been replaced by another model since{instead}")
    return path
