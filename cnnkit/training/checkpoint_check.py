"""A checkpoint map checked field by field, as bundle fields are: one BundleError naming the field.

:func:`check_map` runs when a checkpoint is read, against the model and spec stored in the same file
(the run it belongs to): keys and types, ranges (an epoch within the spec's, counts that cannot
be negative, a PCG64 state that fits 128 bits), and the facts that tie the fields together (one
history row per finished epoch, a monitor whose best epoch is one of them, optimizer state for every
weight, a step counter that does not run ahead of the optimizer steps). :func:`check_position` runs
when the data is loaded: the position must lie inside an epoch of that data.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..bundle import DTYPES
from ..errors import BundleError
from ..runtime.model import Model
from .loop import fresh_optimizer

KEYS = ("epoch", "step", "examples", "optimizer_steps", "loss_sum", "seconds", "first_loss", "stopped", "shuffle", "optimizer",
        "monitor", "best_weights", "history", "ema")
# Checkpoints written before "examples" existed stopped only at whole batches of the run's one batch
# size; those written before "ema" existed had no train.ema.
OPTIONAL = ("examples", "ema")
SHUFFLE_KEYS = ("bit_generator", "state", "inc", "has_uint32", "uinteger")
MONITOR_KEYS = ("best", "best_epoch", "waited")
ROW_REQUIRED = ("epoch", "train_loss", "lr", "seconds")
ROW_TEST, ROW_VALIDATION = ("test_accuracy", "test_macro_f1"), ("val_loss", "val_accuracy", "val_macro_f1")
MAX_COUNT = 1 << 53  # steps and examples: far beyond any run, and still exact as floats
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,38}")


def check_map(saved: Any, model: Model, where: str) -> dict[str, Any]:
    """``saved`` checked against ``model`` (the checkpoint's own model and spec); returns it."""
    m = _map(saved, where)
    _keys(m, KEYS, where, optional=OPTIONAL)
    train = model.spec.train
    epochs = train.epochs
    epoch = _int(m["epoch"], f"{where}.epoch", 1, epochs + 1, f" (the spec trains {epochs} epoch{'s' if epochs > 1 else ''}; {epochs + 1} once done)")
    done = _int(m["optimizer_steps"], f"{where}.optimizer_steps", epoch - 1, MAX_COUNT, " (every finished epoch took an optimizer step)")
    examples = _int(m["examples"], f"{where}.examples", 0, MAX_COUNT) if "examples" in m else None
    most = min(done - (epoch - 1), MAX_COUNT if examples is None else examples)
    step = _int(m["step"], f"{where}.step", 0, most, " (each step of this epoch took an optimizer step and trained at least one example)")
    if epoch > epochs and step:
        raise BundleError(f"{where}.step must be 0 once every epoch is done (epoch {epoch}), found {step}")
    if examples and not step:
        raise BundleError(f"{where}.examples must be 0 at the start of an epoch (step 0), found {examples}")
    loss_sum = _number(m["loss_sum"], f"{where}.loss_sum", 0.0)
    seconds = _number(m["seconds"], f"{where}.seconds", 0.0)
    if step == 0 and (loss_sum or seconds):
        raise BundleError(f"{where}.loss_sum and .seconds must be 0 at the start of an epoch (step 0), found {loss_sum!r:.20} and {seconds!r:.20}")
    if (m["first_loss"] is None) != (done == 0):
        raise BundleError(f"{where}.first_loss must be nil before the first optimizer step and a number after it, found {m['first_loss']!r:.40} after {done} steps")
    if m["first_loss"] is not None:
        _number(m["first_loss"], f"{where}.first_loss", 0.0)
    if not isinstance(m["stopped"], bool):
        raise BundleError(f"{where}.stopped must be true or false, found {m['stopped']!r:.40}")
    if m["stopped"] and (step or train.early_stopping is None):
        raise BundleError(f"{where}.stopped is true, but {f'epoch {epoch} has begun (step {step})' if step else 'the run has no early stopping'}")
    _check_shuffle(m["shuffle"], f"{where}.shuffle")
    _check_optimizer(m["optimizer"], model, done, f"{where}.optimizer")
    _check_history(m["history"], epoch, model.spec.data.validation is not None, f"{where}.history")
    best_epoch = _check_monitor(m["monitor"], model, epoch, f"{where}.monitor")
    keeps_best = model.spec.data.validation is not None and train.restore_best is not False and best_epoch is not None
    if (m["best_weights"] is None) == keeps_best:
        wanted = f"the weights of epoch {best_epoch} (restore_best)" if keeps_best else "nil (no best epoch is kept)"
        raise BundleError(f"{where}.best_weights must be {wanted}, found {'nil' if m['best_weights'] is None else 'a map'}")
    if keeps_best:
        check_arrays(m["best_weights"], model, f"{where}.best_weights")
    _check_ema(m.get("ema"), model, done, f"{where}.ema")
    return m


def check_position(epoch: int, step: int, examples: int | None, batch: int, train_examples: int, where: str) -> None:
    """The checkpoint's place in its epoch must fit the data it resumes on (``examples`` None: an older
    checkpoint, ``step`` whole batches of ``batch``)."""
    if examples is None and step > math.ceil(train_examples / batch):
        raise BundleError(f"{where}.step is {step:,}, but an epoch of {train_examples:,} training examples has only "
                          f"{math.ceil(train_examples / batch):,} steps of {batch}; the checkpoint does not belong to this data")
    if examples is not None and examples > train_examples:
        raise BundleError(f"{where}.examples is {examples:,}, but an epoch has only {train_examples:,} training examples "
                          f"(epoch {epoch}, step {step}); the checkpoint does not belong to this data")


def check_arrays(entries: Any, model: Model, where: str, non_negative: bool = False) -> dict[str, np.ndarray]:
    """A map with an entry for every weight of ``model``: float32 of the weight's shape, finite (and >= 0 if asked)."""
    entries = _map(entries, where)
    missing = [k for k in model.weights if k not in entries]
    extra = [k for k in entries if k not in model.weights]
    if missing or extra:
        raise BundleError(f"{where} must hold every weight of the model: " +
                          (f"missing {missing[:5]!r:.200}" if missing else f"{extra[0]!r:.60} is not a weight of the model"))
    out = {}
    for name, target in model.weights.items():
        at = f"{where}[{name!r}]"
        e = _map(entries[name], at)
        _keys(e, ("dtype", "shape", "data"), at)
        data = e["data"]
        if e["dtype"] != target.dtype.name or e["shape"] != list(target.shape) or not isinstance(data, bytes) or len(data) != target.nbytes:
            raise BundleError(f"{at}: expected {target.dtype.name} of shape {list(target.shape)}, found {e['dtype']!r:.20} {e['shape']!r:.60} "
                              f"with {len(data) if isinstance(data, bytes) else 'no'} bytes of data")
        array = np.frombuffer(data, dtype=DTYPES[target.dtype.name]).reshape(target.shape).astype(target.dtype)
        if not np.isfinite(array).all():
            raise BundleError(f"{at} holds NaN or infinite values")
        if non_negative and (array < 0).any():
            raise BundleError(f"{at} holds negative values, which this state never has")
        out[name] = array
    return out


def optimizer_state_names(optimizer) -> tuple[list[str], list[str], list[str]]:
    """An optimizer's state as a checkpoint keeps it: (scalar names, per-weight map names, working copies).

    Scalars are its numbers (lr, t, …), maps its per-weight arrays (velocity, m, v). The working copies
    are numbers named like a field of its params (momentum, beta1): on resume they come from the
    (maybe --set) spec, or from the schedule that cycles them, so they are not kept. ``lr`` is kept:
    the schedule sets it before every step, but the epoch's record reads it."""
    scalars, arrays, copies = [], [], []
    for attr, value in vars(optimizer).items():
        if attr == "params":
            continue
        if attr != "lr" and attr in type(optimizer.params).model_fields:
            copies.append(attr)
        elif isinstance(value, (bool, int, float)):
            scalars.append(attr)
        elif isinstance(value, dict) and all(isinstance(a, np.ndarray) for a in value.values()):
            arrays.append(attr)
        else:
            raise BundleError(f"optimizer {type(optimizer).__name__}.{attr} is a {type(value).__name__}; "
                              "a checkpoint holds numbers and per-weight arrays only")
    return scalars, arrays, copies


def _check_shuffle(value: Any, where: str) -> None:
    s = _map(value, where)
    _keys(s, SHUFFLE_KEYS, where)
    if s["bit_generator"] != "PCG64":
        raise BundleError(f"{where}.bit_generator must be 'PCG64', found {s['bit_generator']!r:.40}")
    for key in ("state", "inc"):
        text = s[key]
        if not isinstance(text, str) or not _DECIMAL.fullmatch(text) or int(text) >= 1 << 128:
            raise BundleError(f"{where}.{key} must be a 128-bit unsigned integer written in decimal, found {text!r:.50}")
    if int(s["inc"]) % 2 == 0:
        raise BundleError(f"{where}.inc must be odd (PCG64's increment always is), found {s['inc']:.50}")
    _int(s["has_uint32"], f"{where}.has_uint32", 0, 1)
    _int(s["uinteger"], f"{where}.uinteger", 0, (1 << 32) - 1)


def _check_optimizer(value: Any, model: Model, done: int, where: str) -> None:
    """Type, every scalar and every per-weight map the spec's optimizer keeps (see checkpoint.optimizer_map)."""
    o = _map(value, where)
    _keys(o, ("type", "scalars", "arrays"), where)
    fresh = fresh_optimizer(model)
    if o["type"] != fresh.params.type:
        raise BundleError(f"{where}.type is {o['type']!r:.40}, but the run's spec trains with {fresh.params.type!r}")
    scalar_names, array_names, copies = optimizer_state_names(fresh)
    scalars = _map(o["scalars"], f"{where}.scalars")
    _keys(scalars, scalar_names + copies, f"{where}.scalars", optional=copies)  # older checkpoints kept the spec's copies too
    for name in scalar_names + [c for c in copies if c in scalars]:
        kind, at = type(getattr(fresh, name)), f"{where}.scalars.{name}"
        if kind is int:  # a per-step counter (Adam's t) cannot run ahead of the optimizer steps
            _int(scalars[name], at, 0, done, f" (the run took {done} optimizer steps)")
        elif name == "lr":
            if _number(scalars[name], at, 0.0) == 0:
                raise BundleError(f"{at} must be positive, found 0")
        else:
            _number(scalars[name], at)
    arrays = _map(o["arrays"], f"{where}.arrays")
    _keys(arrays, array_names, f"{where}.arrays")
    for name in array_names:
        check_arrays(arrays[name], model, f"{where}.arrays.{name}", name in type(fresh).NON_NEGATIVE_STATE)


def _check_ema(value: Any, model: Model, done: int, where: str) -> None:
    """nil without train.ema; else one update per optimizer step and the average of every weight (none before the first)."""
    if (value is None) != (model.spec.train.ema is None):
        raise BundleError(f"{where} must be a map: the run keeps a moving average (train.ema)" if value is None else f"{where} must be nil: the run has no train.ema")
    if value is None:
        return
    e = _map(value, where)
    _keys(e, ("updates", "weights"), where)
    if _int(e["updates"], f"{where}.updates", done, done, " (one update per optimizer step)"):
        check_arrays(e["weights"], model, f"{where}.weights")
    elif _map(e["weights"], f"{where}.weights"):
        raise BundleError(f"{where}.weights must be empty before the first update")


def _check_history(value: Any, epoch: int, validation: bool, where: str) -> None:
    """One row per finished epoch (epoch - 1 of them), numbered 1, 2, …, with the figures the run records."""
    if not isinstance(value, list):
        raise BundleError(f"{where} must be an array, found {_kind(value)}")
    if len(value) != epoch - 1:
        raise BundleError(f"{where} must hold one row per finished epoch ({epoch - 1}), found {len(value)}")
    figures = ROW_VALIDATION if validation else ROW_TEST
    for i, row in enumerate(value):
        at = f"{where}[{i}]"
        _keys(_map(row, at), ROW_REQUIRED + figures, at)
        _int(row["epoch"], f"{at}.epoch", i + 1, i + 1)
        for key in ("train_loss", "seconds", "val_loss"):
            if key in row:
                _number(row[key], f"{at}.{key}", 0.0)
        if _number(row["lr"], f"{at}.lr", 0.0) == 0:
            raise BundleError(f"{at}.lr must be positive, found 0")
        for key in ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1"):
            if key in row:
                _number(row[key], f"{at}.{key}", 0.0, 1.0)


def _check_monitor(value: Any, model: Model, epoch: int, where: str) -> int | None:
    """nil without validation; else the best figure so far, its epoch and the epochs waited since. Returns best_epoch."""
    if (value is None) != (model.spec.data.validation is None):
        raise BundleError(f"{where} must be a map: the run has a validation split" if value is None else f"{where} must be nil: the run has no validation split")
    if value is None:
        return None
    m = _map(value, where)
    _keys(m, MONITOR_KEYS, where)
    best_epoch = None if m["best_epoch"] is None else _int(m["best_epoch"], f"{where}.best_epoch", 1, epoch - 1, " (a finished epoch)")
    if (m["best"] is None) != (best_epoch is None):
        raise BundleError(f"{where}.best and .best_epoch must both be nil (no epoch scored yet) or both be set")
    if m["best"] is not None:
        _number(m["best"], f"{where}.best")
    since = epoch - 1 - (best_epoch or 0)  # the monitor counts the epochs since its best one (or since the start)
    _int(m["waited"], f"{where}.waited", since, since, " (the finished epochs since the best one)")
    return best_epoch


def _keys(mapping: dict, known: tuple[str, ...], where: str, optional: tuple[str, ...] = ()) -> None:
    missing = [k for k in known if k not in mapping and k not in optional]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(map(repr, missing))}")
    extra = [k for k in mapping if k not in known]
    if extra:
        raise BundleError(f"{where} has unexpected keys {', '.join(repr(k)[:40] for k in extra[:5])}")


def _kind(value: Any) -> str:
    return {dict: "a map", list: "an array", str: "a string", bytes: "binary", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), "nil" if value is None else type(value).__name__)


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a map, found {_kind(value)}")
    return value


def _int(value: Any, where: str, lo: int = 0, hi: int = MAX_COUNT, why: str = "") -> int:
    if type(value) is not int or not lo <= value <= hi:
        wanted = f"{lo}" if lo == hi else f"an integer from {lo:,} to {hi:,}"
        raise BundleError(f"{where} must be {wanted}{why}, found {value!r:.40}")
    return value


def _number(value: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        bounds = "" if lo == -math.inf else f" from {lo:g} to {hi:g}" if hi < math.inf else f" of at least {lo:g}"
        raise BundleError(f"{where} must be a finite number{bounds}, found {value!r:.40}")
    return float(value)
