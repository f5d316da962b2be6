"""Checkpoints: a bundle (format 1.2: plain bundles are 1.1) that also holds what resuming a run needs.

A checkpoint is an ordinary bundle — ``cnnkit.load``, ``predict`` and ``inspect`` read it, and a
format-1.1 reader ignores the extra key, as FORMAT.md promises for newer minors — whose payload has
one more map, ``checkpoint``: the position (epoch, step, examples done, optimizer steps), the epoch's
running loss sum, the shuffling generator's state, the optimizer's scalars and arrays, the
early-stopping monitor, the best epoch's weights and the moving average of the weights (train.ema). The schedule needs only the optimizer-step count;
augmentation and random layers draw from (seed, epoch, step), so they need nothing. docs/FORMAT.md
describes the map; checkpoint_check.py checks every field of it when it is read.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import CHECKPOINT_VERSION, MAX_FILE_BYTES, decode, model_payload, pack, weight_entry
from ..errors import BundleError, SpecError
from ..files import read_regular
from ..runtime.model import Model, model_from_bundle
from .checkpoint_check import check_arrays, check_map, optimizer_state_names
from .history import EpochRecord, History
from .loop import TrainState, new_state

VERSION = CHECKPOINT_VERSION  # format 1.1 plus the payload's "checkpoint" map


def encode_checkpoint(model: Model, state: TrainState) -> bytes:
    """The checkpoint bytes of ``model`` (its weights and metadata as a bundle) at ``state``; deterministic."""
    return pack({**model_payload(model), "checkpoint": _state_map(state)}, VERSION)


def _state_map(state: TrainState) -> dict[str, Any]:
    shuffle = state.shuffle_state
    monitor = state.monitor
    return {
        "epoch": state.epoch,
        "step": state.step,
        "examples": state.examples,
        "optimizer_steps": state.done,
        "loss_sum": float(state.loss_sum),
        "seconds": float(state.seconds),
        "first_loss": state.first_loss,
        "stopped": state.stopped,
        # PCG64's state and increment are 128-bit integers: stored as decimal strings.
        "shuffle": {"bit_generator": shuffle["bit_generator"], "state": str(shuffle["state"]["state"]),
                    "inc": str(shuffle["state"]["inc"]), "has_uint32": int(shuffle["has_uint32"]), "uinteger": int(shuffle["uinteger"])},
        "optimizer": optimizer_map(state.optimizer),
        "monitor": None if monitor is None else {
            "best": monitor.best if math.isfinite(monitor.best) else None, "best_epoch": monitor.best_epoch, "waited": monitor.waited},
        "best_weights": None if state.best_weights is None else {k: weight_entry(k, w) for k, w in state.best_weights.items()},
        "history": [{k: v for k, v in asdict(r).items() if v is not None} for r in state.history],
        "ema": None if state.ema is None else {"updates": state.ema.updates, "weights": {k: weight_entry(k, w) for k, w in state.ema.weights.items()}},
    }


def optimizer_map(optimizer) -> dict[str, Any]:
    """The checkpoint's ``optimizer`` map: type, scalars and per-weight arrays (see :func:`optimizer_state_names`)."""
    scalars, arrays, _ = optimizer_state_names(optimizer)
    return {"type": optimizer.params.type, "scalars": {a: getattr(optimizer, a) for a in scalars},
            "arrays": {a: {k: weight_entry(k, w) for k, w in getattr(optimizer, a).items()} for a in arrays}}


def save_checkpoint(model: Model, state: TrainState, path: str | Path) -> int:
    """Write a checkpoint atomically (the old file stays until the new one is complete); returns its size."""
    from ..bundle import write_atomic

    data = encode_checkpoint(model, state)
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise BundleError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    return len(data)


def read_checkpoint(path: str | Path) -> tuple[Model, dict[str, Any]]:
    """The model stored in a checkpoint and its ``checkpoint`` map, every field checked (checkpoint_check.py)."""
    path = Path(path)
    # Like bundle.read: a regular file under the bundle size cap (a FIFO or /dev/zero would never end).
    return decode_checkpoint(read_regular(path, "checkpoint", BundleError, MAX_FILE_BYTES), str(path))


def decode_checkpoint(data: bytes, source: str = "checkpoint") -> tuple[Model, dict[str, Any]]:
    """:func:`read_checkpoint` for bytes: every bundle check, then every field of the checkpoint map."""
    bundle = decode(data, source)  # every bundle check: checksum, keys, weights; the checkpoint map comes in `extra`
    saved = bundle.extra.get("checkpoint")
    if bundle.version != VERSION or saved is None:
        raise BundleError(f"{source} is a bundle without training state (format {bundle.version[0]}.{bundle.version[1]}), "
                          "not a checkpoint; only a run folder's last.cnnkit can be resumed")
    model = model_from_bundle(bundle, source)
    try:  # training goes on from here: its data and train sections must resolve too (loading leaves them until asked for)
        model.spec.data
        model.spec.train
    except SpecError as exc:
        raise BundleError(f"{source}: embedded spec is invalid: {exc}") from None
    return model, check_map(saved, model, f"{source}: checkpoint")


def restore_state(model: Model, saved: dict[str, Any], source: str = "checkpoint") -> TrainState:
    """A TrainState for ``model`` from a checked checkpoint map; ``model``'s spec may differ from the
    checkpoint's in its training settings (resume --set), within what resume_run allows."""
    where = f"{source}: checkpoint"
    state = new_state(model)
    state.epoch, state.step, state.done = saved["epoch"], saved["step"], saved["optimizer_steps"]
    state.examples = saved.get("examples")  # None: an older checkpoint, at `step` whole batches
    state.loss_sum, state.seconds, state.first_loss, state.stopped = saved["loss_sum"], saved["seconds"], saved["first_loss"], saved["stopped"]
    shuffle = saved["shuffle"]
    state.shuffle_state = {"bit_generator": "PCG64", "state": {"state": int(shuffle["state"]), "inc": int(shuffle["inc"])},
                           "has_uint32": shuffle["has_uint32"], "uinteger": shuffle["uinteger"]}
    _restore_optimizer(state.optimizer, saved["optimizer"], model, f"{where}.optimizer")
    if (saved["monitor"] is None) != (state.monitor is None):
        raise BundleError(f"{where}.monitor does not fit the spec (data.validation was {'added' if saved['monitor'] is None else 'removed'})")
    if state.monitor is not None:
        m = saved["monitor"]
        state.monitor.best = (math.inf if state.monitor.lower_is_better else -math.inf) if m["best"] is None else float(m["best"])
        state.monitor.best_epoch, state.monitor.waited = m["best_epoch"], m["waited"]
    if saved["best_weights"] is not None:
        state.best_weights = check_arrays(saved["best_weights"], model, f"{where}.best_weights")
    if state.ema is not None and saved.get("ema") is not None:  # resume_run refuses to add or drop train.ema
        state.ema.updates = saved["ema"]["updates"]
        state.ema.weights = check_arrays(saved["ema"]["weights"], model, f"{where}.ema.weights") if state.ema.updates else {}
    state.history = History(EpochRecord(**{"test_accuracy": None, "test_macro_f1": None, **row}) for row in saved["history"])
    return state


def _restore_optimizer(optimizer, saved: dict[str, Any], model: Model, where: str) -> None:
    if saved["type"] != optimizer.params.type:
        raise BundleError(f"{where}.type is {saved['type']!r:.40}, but the spec's optimizer is {optimizer.params.type!r}")
    scalars, arrays, _ = optimizer_state_names(optimizer)
    for attr in scalars:  # the spec's working copies (momentum, beta1) stay as the spec gives them
        setattr(optimizer, attr, type(getattr(optimizer, attr))(saved["scalars"][attr]))
    for attr in arrays:
        setattr(optimizer, attr, check_arrays(saved["arrays"][attr], model, f"{where}.arrays.{attr}"))
