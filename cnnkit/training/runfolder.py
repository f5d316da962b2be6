"""The run folder: ``runs/<name>/`` with the resolved spec, history.csv, last.cnnkit and best.cnnkit.

``start_run`` makes a new numbered folder (``runs/<name>``, then ``runs/<name>-2``, … — an earlier run
is never overwritten); ``train_in_folder`` trains with a checkpoint (``last.cnnkit``, train/checkpoint.py)
written atomically at each epoch end and whenever a stop is asked for (Ctrl-C, SIGTERM: see
``stop_on_signals``), and ``resume_run`` goes on from a folder's last checkpoint to the same final
bundle an uninterrupted run writes (same thread count). With a validation split, ``best.cnnkit`` is the
plain bundle of the best epoch so far. ``delivered.json`` records the final bundle (path, checksum).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..bundle import read, save, write_atomic
from ..data.fashion_mnist import Dataset
from ..errors import BundleError, CnnkitError
from ..files import read_regular
from ..runtime.model import Model
from .checkpoint import read_checkpoint, restore_state, save_checkpoint
from .checkpoint_check import check_position
from .health import TrainingDiverged
from .loop import EpochRecord, Hooks, Interrupted, TrainState, fit, training_metadata

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
    """Checkpoints and history.csv at each epoch end; a checkpoint and a stop when ``stop_requested()``."""

    def __init__(self, folder: Path, model: Model, data: Dataset, stop_requested: Callable[[TrainState], bool] | None = None):
        self.folder, self.model, self.data = folder, model, data
        self.stop_requested = stop_requested or (lambda state: False)
        self.checkpoint_bytes = 0
        self.checkpoint_seconds = 0.0
        n, size = int(len(data.train_labels)), model.spec.data.validation
        # the training examples per epoch: what stratified_split leaves of the training set
        self.train_examples = n if size is None else n - (size if isinstance(size, int) else round(size * n))

    def checkpoint(self, state: TrainState) -> None:
        started = time.perf_counter()
        self.model.metadata = {**training_metadata(self.model, self.data, state.history), "train_examples": self.train_examples}
        self.model.metadata["metrics"] = {k: v for k, v in self.model.metadata["metrics"].items() if v is not None}
        try:
            self.checkpoint_bytes = save_checkpoint(self.model, state, self.folder / LAST)
        except BundleError as exc:
            kept = f"the previous checkpoint {self.folder / LAST} is intact" if (self.folder / LAST).is_file() else "no checkpoint was written"
            raise BundleError(f"{exc}; {kept}") from None
        self.checkpoint_seconds = time.perf_counter() - started

    def after_step(self, state: TrainState) -> bool:
        if not self.stop_requested(state):
            return False
        self.checkpoint(state)
        return True

    def after_epoch(self, state: TrainState, record: EpochRecord) -> None:
        self.checkpoint(state)
        write_history(self.folder, state.history, self.train_examples)
        if state.monitor is not None and state.monitor.best_epoch == record.epoch:
            save(self.model, self.folder / BEST)


def train_in_folder(model: Model, data: Dataset, folder: Path, *, state: TrainState | None = None,
                    stop_requested: Callable[[TrainState], bool] | None = None, on_step=None, on_epoch=None,
                    out: Path | None = None) -> RunHooks:
    """Train ``model`` (from ``state`` when resuming) with checkpoints in ``folder``; sets the model's final metadata.

    Raises Interrupted (after writing last.cnnkit) when ``stop_requested`` says so, and TrainingDiverged
    with a message naming the last good checkpoint and how to resume with a lower rate. ``out``, the
    bundle the run was asked to write, goes into the resume command so that it writes the same file.
    """
    hooks = RunHooks(folder, model, data, stop_requested)
    if state is not None:  # the data is loaded now: the checkpoint's position must lie inside one of its epochs
        check_position(state.epoch, state.step, state.examples, model.spec.train.batch_size, hooks.train_examples, f"{folder / LAST}: checkpoint")
    command = f"cnnkit run --resume {shlex.quote(str(folder))}" + (f" --out {shlex.quote(str(out))}" if out is not None else "")
    try:
        history = fit(model, data, on_step=on_step, on_epoch=on_epoch, state=state, hooks=hooks)
    except Interrupted as exc:
        raise Interrupted(f"{exc}; checkpoint {folder / LAST}; go on with: {command}", exc.state) from None
    except TrainingDiverged as exc:
        last = folder / LAST
        where = (f"the last good checkpoint {last} stays; resume with a lower rate: {command} "
                 f"--set train.optimizer.lr=<lower>" if last.is_file() else "no epoch finished, so there is no checkpoint")  # the advice is already in exc
        raise TrainingDiverged(f"{exc}; {where}") from None
    model.metadata = training_metadata(model, data, history)
    return hooks


def resume_run(folder: str | Path, overrides: list[str] | None = None) -> tuple[Model, TrainState]:
    """The model and training state of a run folder's last checkpoint; ``overrides`` (``--set``) may change training settings.

    What may change and what not (docs/checkpoints-and-backends.md): the model and data never; the
    seed never (it drew the weights, the validation split and the order); the batch size always
    (the epoch goes on from the examples it has trained); ``train.shuffle`` at an epoch's start.
    """
    folder = Path(folder)
    if folder.is_file():
        raise CnnkitError(f"cannot resume {folder}: it is a file; give its run folder, {folder.parent}")
    if not folder.is_dir():
        raise CnnkitError(f"cannot resume {folder}: not a run folder (no such directory)")
    if not (folder / LAST).exists() and (folder / SPEC_FILE).is_file():
        raise CnnkitError(f"cannot resume {folder}: it holds no checkpoint, so the run ended before its first epoch was done "
                          f"(killed?); start it again with: cnnkit run {shlex.quote(str(folder / SPEC_FILE))} (then remove {folder})")
    model, saved = read_checkpoint(folder / LAST)
    recorded = _recorded_spec(folder, model)
    if overrides:
        model = _with_overrides(folder, model, overrides, saved)
    state = restore_state(model, saved, str(folder / LAST))
    begun = state.epoch if state.step else state.epoch - 1  # epochs the weights have trained in (the last maybe partly)
    if model.spec.train.epochs < begun:  # the bundle's spec would then disagree with its history
        raise CnnkitError(f"cannot resume {folder} with train.epochs={model.spec.train.epochs}: the run has trained into "
                          f"epoch {begun} already; give train.epochs={begun} or more")
    if recorded != _plain(model.spec.to_dict()):  # spec.json: the spec the run trains under from now on
        write_atomic(folder / SPEC_FILE, (json.dumps(model.spec.to_dict(), indent=2) + "\n").encode())
    return model, state


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(spec))


def _recorded_spec(folder: Path, model: Model) -> dict[str, Any] | None:
    """The folder's spec.json (None when it is gone); CnnkitError when it names another model or data than the checkpoint.

    Only ``train`` may differ: a resume with --set rewrites spec.json before its first checkpoint."""
    from ..spec import read_spec_file

    if not (folder / SPEC_FILE).exists():
        return None
    try:
        recorded = read_spec_file(folder / SPEC_FILE)
    except CnnkitError as exc:
        raise CnnkitError(f"cannot resume {folder}: {exc}; the checkpoint holds the spec, so removing {SPEC_FILE} lets the run go on") from None
    stored = _plain(model.spec.to_dict())
    differs = sorted(k for k in set(recorded) | set(stored) if k != "train" and recorded.get(k) != stored.get(k))
    if differs:
        names = (recorded.get("name"), stored.get("name"))
        which = f"of {names[1]!r:.60}, not of {names[0]!r:.60}" if names[0] != names[1] else f"of another spec ({', '.join(differs)} differ)"
        raise CnnkitError(f"cannot resume {folder}: its {LAST} is a checkpoint {which} as its {SPEC_FILE} says; "
                          "it belongs to another run folder")
    return recorded


def _with_overrides(folder: Path, model: Model, overrides: list[str], saved: dict[str, Any]) -> Model:
    """``model`` with the --set training settings a resume may change (see :func:`resume_run`)."""
    from ..spec import apply_overrides, validate_spec
    from ..spec.training import EarlyStopping

    spec = validate_spec(apply_overrides(model.spec.to_dict(), overrides))
    if {k: v for k, v in spec.to_dict().items() if k != "train"} != {k: v for k, v in model.spec.to_dict().items() if k != "train"}:
        raise CnnkitError(f"cannot resume {folder} with --set outside train.*: the model and its data must stay as they were")
    before, after = model.spec.train, spec.train
    if after.seed != before.seed:
        raise CnnkitError(f"cannot resume {folder} with train.seed={after.seed}: the run's seed {before.seed} drew its weights, validation split "
                          f"and order; to train with seed {after.seed}, start a new run: cnnkit run {shlex.quote(str(folder / SPEC_FILE))} --set train.seed={after.seed}")
    watched = [(t.restore_best is not False, (t.early_stopping or EarlyStopping()).monitor) for t in (before, after)]
    if watched[0] != watched[1]:  # the best epoch so far was tracked (and its weights kept, or not) under the old settings
        raise CnnkitError(f"cannot resume {folder} with another train.restore_best or train.early_stopping.monitor: "
                          f"the run tracked its best epoch with restore_best={before.restore_best}, monitor={watched[0][1]}")
    if saved["step"] and after.shuffle != before.shuffle:  # the rest of the epoch must be the rest of its order
        raise CnnkitError(f"cannot resume {folder} with train.shuffle={str(after.shuffle).lower()} in the middle of epoch {saved['epoch']}: "
                          "the epoch goes on in the order it began with; resume without it, and give it once an epoch is done")
    if saved["step"] and "examples" not in saved and after.batch_size != before.batch_size:
        raise CnnkitError(f"cannot resume {folder} with train.batch_size={after.batch_size} in the middle of epoch {saved['epoch']}: its checkpoint, "
                          "written by an older cnnkit, does not say how many examples the epoch has trained; resume without it, and give it once an epoch is done")
    return Model(spec, model.weights, classes=model.classes, metadata=model.metadata)


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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[TrainState], bool]]:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask training to stop at the end of the current step.

    Yields the ``stop_requested`` callable for :func:`train_in_folder`. A second signal interrupts at once.
    """
    asked: list[int] = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda state: bool(asked)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
