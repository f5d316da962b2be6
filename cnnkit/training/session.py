"""One whole training session, as `cnnkit run` does it: a spec (or a run folder to resume) in, a bundle out.

``train_session`` checks the output, the memory and the run folder's free space before any
training, loads the data, makes (or reopens) the run folder, trains with the chosen engine's
stepper (steppers/), progress and checkpoints (runfolder.py, progress.py), writes the final bundle
and, when matplotlib is installed, the report. Ctrl-C and SIGTERM (signals.py) stop it at a step's
end, or at once while scoring, writing the bundle or drawing the report; each way ends in one
``Interrupted`` saying what is complete and how to go on. What it has to say goes through ``say``
(progress, silenced by --quiet) and ``warn`` (always); the caller prints the result.
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
from .history import final_summary
from .loop import Interrupted
from .progress import Progress
from .resume import resume_run
from .runfolder import check_room, checkpoint_room, discard_unstarted, resume_command, save_final, start_run, train_alongside, train_in_folder
from .signals import StopSignals, stop_on_signals
from .steppers import make_stepper

DEFAULT_RUN_DIR = "runs"


class StrictFailure(CnnkitError):
    """``strict`` and training ended with warnings: no bundle was written."""


@dataclass
class SessionResult:
    """What a finished session wrote, for the caller's last line."""

    target: Path
    folder: Path
    seconds: float
    checkpoint_bytes: int
    checkpoint_seconds: float


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


def check_run_dir(run_dir: str | Path | None, resume: str | Path | None) -> Path:
    """Where new run folders go: ``run_dir`` (None: runs/). CnnkitError for an empty one, or one given with ``resume``."""
    if resume is not None and run_dir is not None:
        raise CnnkitError(f"--run-dir names where new run folders go; --resume goes on in the folder it names ({resume}): give one of them")
    if run_dir is not None and not str(run_dir):
        raise CnnkitError(f"--run-dir is empty; give a folder, e.g. --run-dir {DEFAULT_RUN_DIR} (an empty CNNKIT_RUN_DIR counts as unset)")
    return Path(DEFAULT_RUN_DIR if run_dir is None else run_dir)


def train_session(
    spec: str | Path | None,
    overrides: list[str] | None = None,
    *,
    resume: str | Path | None = None,
    out: str | None = None,
    run_dir: str | Path | None = None,
    force: bool = False,
    strict: bool = False,
    backend: str = "numpy",
    device: str = "cpu",
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
    bar: bool = False,
    stop: StopSignals | None = None,
    check_only: bool = False,
) -> SessionResult | None:
    """Train ``spec`` (or go on with the run folder ``resume``) and write the bundle ``out``.

    New run folders go into ``run_dir`` (default runs/). ``backend`` numpy (cnnkit's runtime) or torch
    (PyTorch on ``device``; DistributedDataParallel under torchrun) does the steps; the rest is the
    same for both (training/steppers/). Returns None in the processes other than rank 0. Raises CnnkitError on bad input, StrictFailure on ``strict`` with training
    warnings (no bundle is written), and ``loop.Interrupted`` when Ctrl-C or SIGTERM stopped the
    session (its message says what is complete and how to go on). Signals are handled by ``stop``
    (a caller's active :func:`signals.stop_on_signals`, which then also covers its own reporting),
    or else from here to the end of the session. ``check_only`` checks everything that can fail
    before training (spec, settings, output, memory, device, data) and returns None: what a
    launcher does before it starts training processes.
    """
    if stop is None and not check_only:
        with stop_on_signals() as stop:
            return train_session(spec, overrides, resume=resume, out=out, run_dir=run_dir, force=force, strict=strict, backend=backend,
                                 device=device, say=say, warn=warn, bar=bar, stop=stop)
    from ..bundle import check_output, estimated_size
    from ..data import load_dataset
    from ..runtime import memory
    from ..runtime.model import Model
    from ..spec import load_spec, parameter_count

    base = check_run_dir(run_dir, resume)
    check_environment()  # before any data is loaded or folder created
    if (spec is None) == (resume is None):
        raise ValueError("give either spec or resume")
    stepper = make_stepper(backend, device)  # a device the machine lacks fails here, before any data is read
    if not stepper.is_main:  # the other processes under torchrun: rank 0 speaks and writes
        say = warn = lambda message: None
    if resume is not None:
        model, state = resume_run(resume, overrides or [])
        model_spec = model.spec
    else:
        model_spec, state = load_spec(spec, overrides or []), None  # the one time this run's spec is resolved
    resolved = model_spec.layers
    # Checked before training, so a bad --out or a batch that cannot fit costs no training time.
    target = check_output(out or f"{model_spec.name}.cnnkit", force=force, size_hint=estimated_size(sum(parameter_count(resolved)), model_spec))
    too_big = memory.batch_fits(memory.estimate(resolved), min(model_spec.train.batch_size, model_spec.data.train_limit or model_spec.train.batch_size))
    if too_big:
        raise CnnkitError(too_big)
    if check_only:  # each process would fail the same way: better here, once, before any starts (the device was checked above)
        load_dataset(model_spec.data, tuple(model_spec.input.shape))
        return None
    d = model_spec.data
    data = load_dataset(d, tuple(model_spec.input.shape))
    if resume is None:
        model = Model(model_spec)
        model.classes = list(data.classes)
    if not stepper.is_main:
        train_alongside(model, data, stepper, state=state, stop_requested=stop)
        return None
    if resume is None:
        check_room(base, checkpoint_room(model))  # before the folder exists: a full disk costs no training time
        folder = start_run(base, model_spec.name, model_spec.to_dict())
    else:
        folder = Path(resume)
        check_room(folder, checkpoint_room(model) // 2)  # the old files are counted as used already
    held = d.validation if d.validation is None or isinstance(d.validation, int) else f"{d.validation:.0%}"
    if state is None:
        where = f"run folder {folder}"
    elif state.stopped or state.epoch > model_spec.train.epochs:  # nothing left to train: only the bundle is written
        where = f"{folder} finished {'early, at epoch ' + str(state.epoch - 1) if state.stopped else 'all its epochs'}; writing its bundle"
    else:
        where = f"resuming {folder} at epoch {state.epoch}, step {state.step}"
    say(f"training {model_spec.name}{stepper.banner()} on {len(data.train_labels):,} images from {data.source}{'' if held is None else f' ({held} held out for validation)'} "
        f"({model_spec.train.epochs} epoch{'s' if model_spec.train.epochs != 1 else ''}, batch {model_spec.train.batch_size}"
        f"{', scored with test-time augmentation ' + ', '.join(model_spec.predict.tta) if model_spec.predict.tta else ''}); {where}")
    started = time.perf_counter()
    progress = Progress(say, bar, model_spec.train.epochs, model_spec.train.batch_size)
    # A diverging run overflows float32 on the way to its one-line "diverged" error; numpy's
    # warnings about that would only clutter the terminal. Training warnings are reported below.
    with progress, np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        try:
            hooks = train_in_folder(model, data, folder, state=state, stop_requested=stop, on_step=progress.on_step,
                                    on_epoch=progress.on_epoch, out=target, warn=warn, stepper=stepper)
        except BaseException:
            if resume is None:
                discard_unstarted(folder)  # failed before its first checkpoint: no folder left holding only spec.json
            raise
    report_training_end(model, say, warn, strict)
    if hooks.failed:
        warn(f"the run folder's last checkpoint could not be written ({hooks.failed}); {hooks.on_disk()}")
    try:
        with stop.at_once():
            save_final(model, target, folder, force=force)
    except KeyboardInterrupt as exc:
        from ..bundle import InterruptedAfterWrite

        if isinstance(exc, InterruptedAfterWrite):
            raise Interrupted(f"stopped just after {target} was written completely; no report was drawn") from None
        raise Interrupted(f"stopped before {target} was written; {hooks.on_disk()}: write the bundle with: {resume_command(folder, target)}") from None
    try:
        with stop.at_once():
            problem = _write_run_report(model, data, folder, target)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped while drawing the report: {target} and {folder} are complete, the report was not written "
                          f"(draw it with: cnnkit report {target} --out {folder / 'report'})") from None
    if problem:
        warn(problem)
    return SessionResult(target, folder, time.perf_counter() - started, hooks.checkpoint_bytes, hooks.checkpoint_seconds)


def _write_run_report(model, data, folder: Path, target: Path) -> str | None:
    """The report into ``folder/report`` when matplotlib is installed; a problem is returned, not raised.

    It is drawn into a temporary folder and moved into place when complete, so an interrupted
    drawing leaves no half report (and an earlier one stays whole)."""
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("matplotlib") is None:
        return None
    from ..bundle.atomic import check_target
    from ..report import CONFUSION, CURVES, INDEX, WORST, check_picture, is_report_page, write_report

    final, partial = folder / "report", folder / f".report-{os.getpid()}.partial"
    try:  # the bundle is written: a report that fails is a warning, not a failed run
        if final.is_dir():  # as write_report does before drawing: never clobber what is not ours
            for name in (CURVES, CONFUSION, WORST):
                check_picture(final / name)
            check_target(final / INDEX, recognise=is_report_page, what="cnnkit report page")
        written = write_report(model, data.test_images, data.test_labels, partial, str(target))
        final.mkdir(exist_ok=True)
        for path in written.values():
            os.replace(path, final / path.name)
    except (CnnkitError, OSError) as exc:
        return f"no report in {final}: {getattr(exc, 'strerror', None) or exc}"
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return None
