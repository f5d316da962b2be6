"""Resuming a run folder: its last checkpoint, checked against its spec.json, and the --set training
settings a resume may change.

What may change and what not (docs/checkpoints-and-backends.md): the model and data never; the seed
never (it drew the weights, the validation split and the order); the batch size always (the epoch
goes on from the examples it has trained); ``train.shuffle`` only at an epoch's start; the epochs
down to those already begun; how the best epoch is tracked never.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ..bundle import write_atomic
from ..errors import CnnkitError
from ..runtime.model import Model
from .checkpoint import read_checkpoint, restore_state
from .loop import TrainState
from .runfolder import LAST, SPEC_FILE


def resume_run(folder: str | Path, overrides: list[str] | None = None) -> tuple[Model, TrainState]:
    """The model and training state of a run folder's last checkpoint; ``overrides`` (``--set``) may
    change training settings (see the module docstring)."""
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
    if (after.ema is None) != (before.ema is None):  # the average is kept from the first step on, or not at all
        raise CnnkitError(f"cannot resume {folder} with train.ema {'added' if before.ema is None else 'removed'}: the run "
                          f"{'kept no' if before.ema is None else 'kept a'} moving average of its weights from its first step; "
                          "its decay and warm-up may change, not whether there is one")
    if saved["step"] and after.shuffle != before.shuffle:  # the rest of the epoch must be the rest of its order
        raise CnnkitError(f"cannot resume {folder} with train.shuffle={str(after.shuffle).lower()} in the middle of epoch {saved['epoch']}: "
                          "the epoch goes on in the order it began with; resume without it, and give it once an epoch is done")
    if saved["step"] and "examples" not in saved and after.batch_size != before.batch_size:
        raise CnnkitError(f"cannot resume {folder} with train.batch_size={after.batch_size} in the middle of epoch {saved['epoch']}: its checkpoint, "
                          "written by an older cnnkit, does not say how many examples the epoch has trained; resume without it, and give it once an epoch is done")
    return Model(spec, model.weights, classes=model.classes, metadata=model.metadata)
