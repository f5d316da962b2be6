"""One whole training session, as `cnnkit run` does it: a spec (or a run folder to resume) in, a bundle out.

``train_session`` checks the output and the memory before any training, hands the torch backend its
spec, or else loads the data, makes (or reopens) the run folder, trains with progress and checkpoints
(train/runfolder.py, train/progress.py), writes the final bundle and, when matplotlib is installed,
the report. What it has to say goes through ``say`` (progress, silenced by --quiet) and ``warn`` (always);
the caller prints the result.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CnnkitError
from ..runtime.tuning import check_environment
from .health import TrainingWarning
from .loop import final_summary
from .progress import Progress
from .runfolder import discard_unstarted, resume_run, save_final, start_run, stop_on_signals, train_in_folder


class StrictFailure(CnnkitError):
    """``strict`` and training ended with warnings: no bundle was written."""


@dataclass
class SessionResult:
    """What a finished NumPy session wrote, for the caller's last line."""

    target: Path
    folder: Path
    seconds: float
    checkpoint_bytes: int
    checkpoint_seconds: float


def check_backend(backend: str, device: str, resume: str | Path | None) -> None:
    """CnnkitError unless ``backend`` is numpy or torch, ``device`` is cpu for numpy, and only numpy resumes."""
    if backend not in ("numpy", "torch"):
        raise CnnkitError(f"--backend must be numpy or torch. Received: {backend!r}")
    if backend == "numpy" and device != "cpu":
        raise CnnkitError(f"--device {device} needs --backend torch (the NumPy backend runs on the CPU)")
    if backend == "torch" and resume is not None:
        raise CnnkitError("--resume works with the NumPy backend only; the torch backend writes no run folder")


def report_training_end(model, say: Callable[[str], None], warn: Callable[[str], None], strict: bool) -> None:
    """After training, before the bundle is written (both backends): the final test line, each training
    warning, and with ``strict`` a StrictFailure when there were any."""
    summary = final_summary(model.metadata)  # with a validation split: the test scores, scored once
    if summary:
        say(summary)
    found = model.metadata.get("warnings", [])
    for message in found:
        warn(message)
    if strict and found:
        raise StrictFailure(f"--strict: training ended with {len(found)} warning{'s' if len(found) > 1 else ''}; no bundle written")


def train_session(
    spec: str | Path | None,
    overrides: list[str] | None = None,
    *,
    resume: str | Path | None = None,
    out: str | None = None,
    run_dir: str | Path = "runs",
    force: bool = False,
    strict: bool = False,
    backend: str = "numpy",
    device: str = "cpu",
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    bar: bool = False,
    check_only: bool = False,
) -> SessionResult | None:
    """Train ``spec`` (or go on with the run folder ``resume``) and write the bundle ``out``.

    Returns None for the torch backend (it writes no run folder). Raises CnnkitError on bad input,
    StrictFailure on ``strict`` with training warnings (no bundle is written), and ``loop.Interrupted``
    when Ctrl-C or SIGTERM stopped training (the run folder's last checkpoint is then up to date).
    ``check_only`` checks everything that can fail before training (spec, settings, output, memory,
    device, data) and returns None: what a launcher does before it starts training processes.
    """
    from ..bundle import check_output, estimated_size
    from ..data import load_dataset
    from ..runtime import memory
    from ..runtime.model import Model
    from ..spec import load_spec, parameter_count

    check_backend(backend, device, resume)
    check_environment()  # before any data is loaded or folder created
    if (spec is None) == (resume is None):
        raise ValueError("give either spec or resume")
    if resume is not None:
        model, state = resume_run(resume, overrides or [])
        model_spec = model.spec
    else:
        model_spec, state = load_spec(spec, overrides or []), None  # the one time this run's spec is resolved
    resolved = model_spec.layers
    # Checked before training, so a bad --out or a batch that cannot fit costs no training time.
    target = check_output(out or f"{model_spec.name}.cnnkit", force=force, size_hint=estimated_size(sum(parameter_count(resolved))))
    too_big = memory.batch_fits(memory.estimate(resolved), min(model_spec.train.batch_size, model_spec.data.train_limit or model_spec.train.batch_size))
    if too_big:
        raise CnnkitError(too_big)
    if check_only:  # each process would fail the same way: better here, once, before any starts
        if backend == "torch":
            from ..backends.torch import check_device

            check_device(device)
        load_dataset(model_spec.data, tuple(model_spec.input.shape))
        return None
    if backend == "torch":
        from ..backends.torch import run_spec

        run_spec(model_spec, target, device, say=say, force=force, warn=warn, strict=strict)
        return None
    d = model_spec.data
    data = load_dataset(d, tuple(model_spec.input.shape))
    if resume is None:
        model = Model(model_spec)
        model.classes = list(data.classes)
        folder = start_run(run_dir, model_spec.name, model_spec.to_dict())
    else:
        folder = Path(resume)
    held = d.validation if d.validation is None or isinstance(d.validation, int) else f"{d.validation:.0%}"
    if state is None:
        where = f"run folder {folder}"
    elif state.stopped or state.epoch > model_spec.train.epochs:  # nothing left to train: only the bundle is written
        where = f"{folder} finished {'early, at epoch ' + str(state.epoch - 1) if state.stopped else 'all its epochs'}; writing its bundle"
    else:
        where = f"resuming {folder} at epoch {state.epoch}, step {state.step}"
    say(f"training {model_spec.name} on {len(data.train_labels):,} images from {data.source}{'' if held is None else f' ({held} held out for validation)'} "
        f"({model_spec.train.epochs} epoch{'s' if model_spec.train.epochs != 1 else ''}, batch {model_spec.train.batch_size}); {where}")
    started = time.perf_counter()
    progress = Progress(say, bar, model_spec.train.epochs, model_spec.train.batch_size)
    # A diverging run overflows float32 on the way to its one-line "diverged" error; numpy's
    # warnings about that would only clutter the terminal. Training warnings are reported below.
    with progress, stop_on_signals() as stop_requested, np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        try:
            hooks = train_in_folder(model, data, folder, state=state, stop_requested=stop_requested,
                                    on_step=progress.on_step, on_epoch=progress.on_epoch, out=target)
        except BaseException:
            if resume is None:
                discard_unstarted(folder)  # failed before its first checkpoint: no folder left holding only spec.json
            raise
    report_training_end(model, say, warn, strict)
    save_final(model, target, folder, force=force)
    problem = _write_run_report(model, data, folder, target)
    if problem:
        warn(problem)
    return SessionResult(target, folder, time.perf_counter() - started, hooks.checkpoint_bytes, hooks.checkpoint_seconds)


def _write_run_report(model, data, folder: Path, target: Path) -> str | None:
    """The report into ``folder/report`` when matplotlib is installed; a problem is returned, not raised."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    from ..report import write_report

    try:  # the bundle is written: a report that fails is a warning, not a failed run
        write_report(model, data.test_images, data.test_labels, folder / "report", str(target))
    except CnnkitError as exc:
        return f"no report in {folder / 'report'}: {exc}"
    return None
