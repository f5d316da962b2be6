"""Checkpoints: a bundle (format 1.2: plain bundles are 1.1) that also holds what resuming a run needs.

A checkpoint is an ordinary bundle — ``cnnkit.load``, ``predict`` and ``inspect`` read it, and a
format-1.1 reader ignores the extra key, as FORMAT.md promises for newer minors — whose payload has
one more map, ``checkpoint``: the position (epoch, step, optimizer steps), the epoch's running loss
sum, the shuffling generator's state, the optimizer's scalars and arrays, the early-stopping monitor
and the best epoch's weights. The schedule needs only the optimizer-step count; augmentation and random
layers draw from (seed, epoch, step), so they need nothing. docs/FORMAT.md describes the map.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import CHECKPOINT_VERSION, DTYPES, MAX_FILE_BYTES, decode, model_payload, pack, weight_entry
from ..errors import BundleError, SpecError
from ..files import read_regular
from ..runtime.model import Model, model_from_bundle
from .loop import EpochRecord, History, TrainState, new_state

VERSION = CHECKPOINT_VERSION  # format 1.1 plus the payload's "checkpoint" map
KEYS = ("epoch", "step", "optimizer_steps", "loss_sum", "seconds", "first_loss", "stopped", "shuffle", "optimizer",
        "monitor", "best_weights", "history")


def encode_checkpoint(model: Model, state: TrainState) -> bytes:
    """The checkpoint bytes of ``model`` (its weights and metadata as a bundle) at ``state``; deterministic."""
    return pack({**model_payload(model), "checkpoint": _state_map(state)}, VERSION)


def _state_map(state: TrainState) -> dict[str, Any]:
    shuffle = state.shuffle_state
    monitor = state.monitor
    return {
        "epoch": state.epoch,
        "step": state.step,
        "optimizer_steps": state.done,
        "loss_sum": float(state.loss_sum),
        "seconds": float(state.seconds),
        "first_loss": state.first_loss,
        "stopped": state.stopped,
        # PCG64's state and increment are 128-bit integers: stored as decimal strings.
        "shuffle": {"bit_generator": shuffle["bit_generator"], "state": str(shuffle["state"]["state"]),
                    "inc": str(shuffle["state"]["inc"]), "has_uint32": int(shuffle["has_uint32"]), "uinteger": int(shuffle["uinteger"])},
        "optimizer": _optimizer_map(state.optimizer),
        "monitor": None if monitor is None else {
            "best": monitor.best if math.isfinite(monitor.best) else None, "best_epoch": monitor.best_epoch, "waited": monitor.waited},
        "best_weights": None if state.best_weights is None else {k: weight_entry(k, w) for k, w in state.best_weights.items()},
        "history": [{k: v for k, v in asdict(r).items() if v is not None} for r in state.history],
    }


def _from_spec(optimizer, attr: str) -> bool:
    return attr != "lr" and attr in type(optimizer.params).model_fields


def _optimizer_map(optimizer) -> dict[str, Any]:
    """An optimizer's state: its numbers (lr, t, …) and its per-weight arrays (velocity, m, v).

    Other numbers named like a field of its params (momentum, beta1) are working copies of the
    spec's values: on resume they come from the (maybe --set) spec, or from the schedule that cycles
    them. ``lr`` is kept: the schedule sets it before every step, but the epoch's record reads it."""
    scalars, arrays = {}, {}
    for attr, value in vars(optimizer).items():
        if attr == "params" or _from_spec(optimizer, attr):
            continue
        if isinstance(value, (bool, int, float)):
            scalars[attr] = value
        elif isinstance(value, dict) and all(isinstance(a, np.ndarray) for a in value.values()):
            arrays[attr] = {k: weight_entry(k, a) for k, a in value.items()}
        else:
            raise BundleError(f"optimizer {type(optimizer).__name__}.{attr} is a {type(value).__name__}; "
                              "a checkpoint holds numbers and per-weight arrays only")
    return {"type": optimizer.params.type, "scalars": scalars, "arrays": arrays}


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
    """The model stored in a checkpoint and its raw ``checkpoint`` map (checked by :func:`restore_state`)."""
    path = Path(path)
    # Like bundle.read: a regular file under the bundle size cap (a FIFO or /dev/zero would never end).
    data = read_regular(path, "checkpoint", BundleError, MAX_FILE_BYTES)
    bundle = decode(data, str(path))  # every bundle check: checksum, keys, weights; the checkpoint map comes in `extra`
    saved = bundle.extra.get("checkpoint")
    if bundle.version != VERSION or not isinstance(saved, dict):
        raise BundleError(f"{path} is a bundle without training state (format {bundle.version[0]}.{bundle.version[1]}), "
                          "not a checkpoint; only a run folder's last.cnnkit can be resumed")
    model = model_from_bundle(bundle, str(path))
    try:  # training goes on from here: its data and train sections must resolve too (loading leaves them until asked for)
        model.spec.data
        model.spec.train
    except SpecError as exc:
        raise BundleError(f"{path}: embedded spec is invalid: {exc}") from None
    return model, saved


def restore_state(model: Model, saved: dict[str, Any], source: str = "checkpoint") -> TrainState:
    """A TrainState for ``model`` (whose spec may differ from the checkpoint's in its training settings) from a checkpoint map."""
    where = f"{source}: checkpoint"
    missing = [k for k in KEYS if k not in saved]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(map(repr, missing))}")
    state = new_state(model)
    state.epoch, state.step, state.done = (_int(saved[k], f"{where}.{k}") for k in ("epoch", "step", "optimizer_steps"))
    state.loss_sum, state.seconds = (_number(saved[k], f"{where}.{k}") for k in ("loss_sum", "seconds"))
    state.first_loss = None if saved["first_loss"] is None else _number(saved["first_loss"], f"{where}.first_loss")
    if not isinstance(saved["stopped"], bool):
        raise BundleError(f"{where}.stopped must be true or false, found {saved['stopped']!r:.40}")
    state.stopped = saved["stopped"]
    shuffle = _map(saved["shuffle"], f"{where}.shuffle")
    try:
        state.shuffle_state = {"bit_generator": shuffle["bit_generator"], "state": {"state": int(shuffle["state"]), "inc": int(shuffle["inc"])},
                               "has_uint32": int(shuffle["has_uint32"]), "uinteger": int(shuffle["uinteger"])}
        np.random.default_rng().bit_generator.state = state.shuffle_state  # PCG64 checks it
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}.shuffle is not a PCG64 generator state ({exc})") from None
    _restore_optimizer(state.optimizer, _map(saved["optimizer"], f"{where}.optimizer"), model, f"{where}.optimizer")
    if (saved["monitor"] is None) != (state.monitor is None):
        raise BundleError(f"{where}.monitor does not fit the spec (data.validation was {'added' if saved['monitor'] is None else 'removed'})")
    if state.monitor is not None:
        m = _map(saved["monitor"], f"{where}.monitor")
        state.monitor.best = (math.inf if state.monitor.lower_is_better else -math.inf) if m["best"] is None else _number(m["best"], f"{where}.monitor.best")
        state.monitor.best_epoch = None if m["best_epoch"] is None else _int(m["best_epoch"], f"{where}.monitor.best_epoch")
        state.monitor.waited = _int(m["waited"], f"{where}.monitor.waited")
    if saved["best_weights"] is not None:
        state.best_weights = _arrays(saved["best_weights"], model, f"{where}.best_weights")
    history = History()
    for i, row in enumerate(saved["history"]):
        try:
            history.append(EpochRecord(**{"test_accuracy": None, "test_macro_f1": None, **_map(row, f"{where}.history[{i}]")}))
        except TypeError as exc:
            raise BundleError(f"{where}.history[{i}]: {exc}") from None
    state.history = history
    return state


def _restore_optimizer(optimizer, saved: dict[str, Any], model: Model, where: str) -> None:
    if saved.get("type") != optimizer.params.type:
        raise BundleError(f"{where}.type is {saved.get('type')!r:.40}, but the spec's optimizer is {optimizer.params.type!r}")
    for attr, value in _map(saved.get("scalars"), f"{where}.scalars").items():
        if _from_spec(optimizer, attr):
            continue  # older checkpoints saved momentum and beta1 too: the spec's values win (see _optimizer_map)
        current = getattr(optimizer, attr, None)
        if not isinstance(current, (bool, int, float)) or not isinstance(value, (bool, int, float)):
            raise BundleError(f"{where}.scalars.{attr:.40} does not fit {type(optimizer).__name__}")
        setattr(optimizer, attr, type(current)(value))
    for attr, entries in _map(saved.get("arrays"), f"{where}.arrays").items():
        if not isinstance(getattr(optimizer, attr, None), dict):
            raise BundleError(f"{where}.arrays.{attr:.40} does not fit {type(optimizer).__name__}")
        setattr(optimizer, attr, _arrays(entries, model, f"{where}.arrays.{attr}"))


def _arrays(entries: Any, model: Model, where: str) -> dict[str, np.ndarray]:
    out = {}
    for name, entry in _map(entries, where).items():
        e = _map(entry, f"{where}.{name:.60}")
        target = model.weights.get(name)
        if target is None:
            raise BundleError(f"{where}: {name!r:.60} is not a weight of the model")
        dtype = DTYPES.get(e.get("dtype")) if isinstance(e.get("dtype"), str) else None
        data = e.get("data")
        if dtype is None or e.get("shape") != list(target.shape) or not isinstance(data, bytes) or len(data) != target.size * dtype.itemsize:
            raise BundleError(f"{where}.{name}: expected {target.dtype.name} of shape {list(target.shape)}, found {e.get('dtype')!r:.20} {e.get('shape')!r:.60}")
        out[name] = np.frombuffer(data, dtype=dtype).reshape(target.shape).astype(target.dtype)
    return out


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a map")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise BundleError(f"{where} must be a non-negative integer, found {value!r:.40}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"{where} must be a finite number, found {value!r:.40}")
    return float(value)
