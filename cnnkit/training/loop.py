"""The one training loop: shuffled mini-batches, optional augmentation, per-epoch test or validation
scores, for every engine (a stepper, training/steppers/, does each step).

Without ``data.validation`` the test set is scored after every epoch (the seed notebook's way). With
it, each epoch is scored on the held-out split instead, early stopping and the best-epoch weights
follow that split, and the test set is scored once, at the end, with the weights the model keeps.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.dataset import Dataset
from ..errors import CnnkitError, DataError, DataWarning
from ..metrics import accuracy, macro_f1
from ..runtime.inputs import training_range_warning
from ..runtime.model import Model
from ..spec.training import EmaSpec
from ..optim import OPTIMIZERS, Optimizer, build_schedule
from .augment import Augmenter
from .ema import WeightAverage, averaged, kept_weights
from .health import TrainingDiverged, TrainingWarning, chance_warning, divergence_message, loss_growth_warning
from .history import EpochCallback, EpochRecord, History, StepCallback
from .steppers.base import Stepper
from .steppers.numpy import NumpyStepper
from .validation import Monitor, score, stratified_split

# Image sets whose float32 model input would take more than this are converted a batch at a time (a
# memory-mapped dataset then stays on disk); smaller ones at once. The values are the same either way.
EAGER_BYTES = 512 << 20
# evaluate() converts at most this many images at a time (a multiple of any usual batch size).
EVAL_CHUNK = 8192


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, preprocessed: bool = False) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model`` on labelled images (converted EVAL_CHUNK at a time)."""
    chunks = range(0, len(images), EVAL_CHUNK)
    # Converted here, not by predict: the pixel range was looked at once, when training started.
    chunk = (lambda s: images[s : s + EVAL_CHUNK]) if preprocessed else (lambda s: model.preprocess(images[s : s + EVAL_CHUNK]))
    predicted = np.concatenate([model.predict(chunk(s), batch_size=batch_size, preprocessed=True) for s in chunks] or [np.zeros(0, np.int64)])
    labels = np.asarray(labels, dtype=np.int64)
    return {"accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(labels, predicted, model.output_shape[-1])}


@dataclass
class TrainState:
    """Everything a run needs to go on from where it is: what a checkpoint stores (train/checkpoint.py).

    The position is ``step`` steps and ``examples`` examples into ``epoch`` (all of them: its training
    is done, its scoring not yet). The next step trains the examples after ``examples`` in the
    epoch's order, so a run resumed with another batch size skips none. ``shuffle_state`` is the
    shuffling generator's state at the start of ``epoch``: the epoch's order is drawn again from it,
    so no order needs storing.
    """

    optimizer: Optimizer
    shuffle_state: dict[str, Any]
    monitor: Monitor | None = None
    epoch: int = 1
    step: int = 0
    examples: int | None = 0  # None: from a checkpoint older than this field, ``step`` whole batches
    done: int = 0  # optimizer steps so far: the schedule's clock
    loss_sum: float = 0.0  # sum over the epoch's steps so far of loss * batch size
    seconds: float = 0.0  # wall time of the epoch's steps so far
    first_loss: float | None = None
    best_weights: dict[str, np.ndarray] | None = None  # the best epoch's weights (the average's with train.ema), with validation and restore_best
    ema: WeightAverage | None = None  # the moving average of the weights, with train.ema
    stopped: bool = False  # early stopping ran out of patience
    history: History = field(default_factory=History)


def new_state(model: Model) -> TrainState:
    """The state of a run that has not started: a fresh optimizer, the seed's shuffling generator."""
    settings = model.spec.train
    ema = WeightAverage(settings.ema) if settings.ema is not None else None
    return TrainState(fresh_optimizer(model), np.random.default_rng(settings.seed).bit_generator.state, new_monitor(model), ema=ema)


def fresh_optimizer(model: Model) -> Optimizer:
    """The spec's optimizer for ``model``'s weights, before any step."""
    settings = model.spec.train.optimizer
    return OPTIMIZERS[settings.type](settings, model.weights)


def new_monitor(model: Model) -> Monitor | None:
    """The best-epoch monitor of a spec with a validation split (early stopping's settings, else val_loss), or None."""
    if model.spec.data.validation is None:
        return None
    stopping = model.spec.train.early_stopping
    return Monitor(stopping.monitor, stopping.min_delta, stopping.patience) if stopping else Monitor()


class Hooks:
    """Called by ``fit`` at the end of each step and epoch (run folders and checkpoints use them).

    After each step every process asks ``should_stop(state)``; when any says yes, the weights are
    synced, rank 0 calls ``save(state)`` (the state as it is: weights updated, ``state.step``
    counted, so what it saves resumes exactly) and ``fit`` raises Interrupted. Rank 0 alone scores
    and calls ``after_epoch``. Scoring (an epoch's, and the final test scoring) runs inside
    ``scoring()``; a KeyboardInterrupt there calls ``interrupted(state)``: with the state before an
    epoch's scoring (its steps done, its scores not yet; None in the final scoring, whose state the
    last epoch's end saved), it returns True when the hooks saved what a resume needs; ``fit`` then
    raises Interrupted, else the KeyboardInterrupt goes on.
    """

    def should_stop(self, state: TrainState) -> bool:
        return False

    def save(self, state: TrainState) -> bool:
        return True

    def after_epoch(self, state: TrainState, record: EpochRecord) -> None:
        pass

    def scoring(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def interrupted(self, state: TrainState | None) -> bool:
        return False


class Interrupted(CnnkitError):
    """Training stopped because a hook asked it to (Ctrl-C, SIGTERM, a test); ``state`` is where (None: unknown)."""

    def __init__(self, message: str, state: TrainState | None = None):
        super().__init__(message)
        self.state = state


# What rank 0 decided at an epoch's end, for every process (Stepper.share).
GO_ON, STOPPED_EARLY, INTERRUPTED = 0, 1, 2


def fit(
    model: Model,
    data: Dataset,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    *,
    state: TrainState | None = None,
    hooks: Hooks | None = None,
    stepper: Stepper | None = None,
) -> History:
    """Train ``model`` in place with its spec's ``train`` settings; returns one record per epoch.

    Each epoch visits the training set in an order drawn from the spec's seed; batch_size 1 with
    plain SGD is the seed notebook's algorithm. ``stepper`` (training/steppers: cnnkit's NumPy
    runtime by default, or PyTorch) does each step; everything else is done here, the same for
    every engine. A non-finite loss stops training at its step with a DataError; a run that ends
    diverged or at chance level warns (TrainingWarning, also in ``History.warnings``). ``state``
    (from a checkpoint) continues a run where it stopped, to the same result an uninterrupted run
    gives with the same thread count; ``hooks`` see every step and epoch end. Under several
    processes only rank 0's History holds the records.
    """
    settings = model.spec.train
    check_classes(model, data)
    problem = training_range_warning(data.train_images, model.spec.input.preprocess.divide)
    if problem:  # before any training time is spent: the run may be stopped and the spec fixed
        warnings.warn(DataWarning(problem), stacklevel=2)
    x, y, held_out, rows = training_arrays(model, data)
    test_eager = _eager(model, data.test_images)
    x_test = model.preprocess(data.test_images) if test_eager else data.test_images
    augment = augmenter(model)
    state = new_state(model) if state is None else state
    hooks, stepper = hooks or Hooks(), stepper or NumpyStepper()
    optimizer, monitor, history = state.optimizer, state.monitor, state.history
    restore = held_out is not None and settings.restore_best is not False
    shuffler = np.random.default_rng(settings.seed)
    n, batch = len(y), settings.batch_size
    schedule = build_schedule(settings.schedule, optimizer.params.lr, total_steps=settings.epochs * math.ceil(n / batch))
    if state.examples is None:  # an older checkpoint: `step` whole batches of the batch size it ran with
        state.examples = min(state.step * batch, n)
    sample = held_out[0] if held_out is not None else x_test if test_eager else model.preprocess(data.test_images[:1024])
    stepper.start(model, state, sample[:1024])
    finished = False
    try:
        while state.epoch <= settings.epochs and not state.stopped:
            epoch = state.epoch
            shuffler.bit_generator.state = state.shuffle_state
            order = shuffler.permutation(n) if settings.shuffle else np.arange(n)
            steps = state.step + math.ceil((n - state.examples) / batch)  # this epoch's, after a resume with another batch size too
            clock = time.perf_counter()
            while state.examples < n:
                step, idx = state.step, order[state.examples : state.examples + batch]
                xb = x[idx] if rows is None else model.preprocess(x[rows[idx]])
                xb = xb if augment is None else augment(xb, epoch, step)
                loss = stepper.loss(xb, y[idx], epoch, step)
                if not math.isfinite(loss):  # stop here: every later step would only spread NaN
                    raise TrainingDiverged(divergence_message(epoch, step + 1, steps, loss, optimizer.lr if state.done else None))
                state.first_loss = loss if state.first_loss is None else state.first_loss
                schedule.apply(optimizer, state.done)  # sets optimizer.lr (and momentum, for onecycle)
                stepper.update()
                if state.ema is not None:
                    stepper.average(state.ema)
                state.done += 1
                state.loss_sum += loss * len(idx)
                state.step, state.examples = step + 1, state.examples + len(idx)
                now = time.perf_counter()
                state.seconds, clock = state.seconds + now - clock, now
                if on_step is not None:
                    on_step(epoch, state.examples, n, loss)
                if stepper.any_rank(hooks.should_stop(state)):
                    stepper.sync()
                    if stepper.is_main:
                        hooks.save(state)
                    raise Interrupted(f"training stopped at epoch {epoch}, step {step + 1} of {steps}", state)
            stepper.sync()
            record, outcome = None, GO_ON
            if stepper.is_main:
                try:
                    # With train.ema the average is scored. A stop here loses nothing: the scores are computed again on resume.
                    with hooks.scoring(), averaged(state.ema, model):
                        record = epoch_record(model, epoch, state.loss_sum / n, optimizer.lr, state.seconds, x_test, data.test_labels, held_out, test_eager)
                except KeyboardInterrupt:
                    if not hooks.interrupted(state):
                        raise
                    outcome = INTERRUPTED
            if stepper.share(outcome) == INTERRUPTED:
                raise Interrupted(f"training stopped at epoch {epoch} after its {state.step} steps, while scoring it", state)
            if record is not None:
                if monitor is not None and monitor.update(epoch, getattr(record, monitor.monitor)) and restore:
                    state.best_weights = kept_weights(state.ema, model)
                history.append(record)
                outcome = STOPPED_EARLY if monitor is not None and monitor.should_stop else GO_ON
            state.epoch, state.step, state.examples, state.loss_sum, state.seconds = epoch + 1, 0, 0, 0.0, 0.0
            state.shuffle_state = shuffler.bit_generator.state
            state.stopped = stepper.share(outcome) == STOPPED_EARLY  # rank 0 decides early stopping for every process
            if record is not None:
                if on_epoch is not None:
                    on_epoch(record)
                hooks.after_epoch(state, record)
        finished = True
    finally:
        stepper.close(finished)
    if not stepper.is_main:
        return history
    if state.ema is not None:
        state.ema.copy_into(model)  # the model keeps the average (or, in finish, the best epoch's average)
    try:
        with hooks.scoring():  # restores the best weights in place, then scores the test set: done again on resume
            finish(model, history, monitor, state.best_weights, state.first_loss, x_test, data.test_labels, held_out, test_eager)
    except KeyboardInterrupt:
        if not hooks.interrupted(None):
            raise
        raise Interrupted("training stopped after its last epoch, while scoring the test set", state) from None
    for message in history.warnings:
        warnings.warn(message, TrainingWarning, stacklevel=2)
    return history


def check_classes(model: Model, data: Dataset) -> None:
    classes = model.output_shape[-1]
    # Checked before any training time is spent: a bundle pairs each output with a class name, and
    # a model whose outputs do not match the dataset's classes would save a bundle no one can load.
    # Labels first: with class names made up from the labels, one stray test label of 12 would
    # otherwise read as "the dataset has 13 classes".
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{split} labels range over {labels.min()}..{labels.max()}, but the model has {classes} outputs "
                            f"(classes 0..{classes - 1}); fix the labels, or make the last layer produce {labels.max() + 1} outputs")
    if len(data.classes) != classes:
        raise DataError(f"the model has {classes} outputs but the dataset has {len(data.classes)} classes; "
                        f"make the last layer produce {len(data.classes)} outputs (e.g. dense units={len(data.classes)})")


def epoch_record(model: Model, epoch: int, train_loss: float, lr: float, seconds: float, x_test: np.ndarray, test_labels: np.ndarray,
                 held_out: tuple[np.ndarray, np.ndarray] | None, test_preprocessed: bool = True) -> EpochRecord:
    """An epoch's record, scored on the validation split when there is one, else on the test set."""
    if held_out is None:
        scores = _test_scores(model, x_test, test_labels, test_preprocessed)
        return EpochRecord(epoch, train_loss, scores["accuracy"], scores["macro_f1"], lr, seconds)
    v = score(model, *held_out)
    return EpochRecord(epoch, train_loss, None, None, lr, seconds, v["loss"], v["accuracy"], v["macro_f1"])


def finish(model: Model, history: History, monitor: Monitor | None, best_weights: dict[str, np.ndarray] | None, first_loss: float | None,
           x_test: np.ndarray, test_labels: np.ndarray, held_out: tuple[np.ndarray, np.ndarray] | None, test_preprocessed: bool = True) -> None:
    """The end of a run: with validation, keep the best epoch's weights (``best_weights``, when
    restore_best) and score the test set once; then the health warnings, in ``history.warnings``."""
    if held_out is not None:
        last = history[-1].epoch
        restore = model.spec.train.restore_best is not False
        kept = monitor.best_epoch if restore and monitor.best_epoch is not None else last
        if kept != last:
            for name, w in best_weights.items():
                model.weights[name][...] = w  # in place: the layers hold views of these arrays
        history.test = _test_scores(model, x_test, test_labels, test_preprocessed)  # once, with the weights the model keeps
        history.validation = {"examples": len(held_out[1]), "monitor": monitor.monitor, "best_epoch": monitor.best_epoch,
                              "weights_from_epoch": kept, "stopped_early": last < model.spec.train.epochs}
    history.warnings = _health(history, first_loss, model.output_shape[-1], test_labels, held_out, model.spec.train.ema)


def _eager(model: Model, images: np.ndarray) -> bool:
    return len(images) * int(np.prod(model.input_shape)) * 4 <= EAGER_BYTES


def training_arrays(model: Model, data: Dataset) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """Training images and labels, the preprocessed held-out (images, labels) when the spec asks for a split, and ``rows``.

    ``rows`` is None when the images are model input (N, C, H, W) float32, converted at once; for a
    set over EAGER_BYTES the images stay raw (memory-mapped ones on disk) and example i of the
    training set is raw image ``rows[i]``, converted with its batch.
    """
    eager = _eager(model, data.train_images)
    x = model.preprocess(data.train_images) if eager else data.train_images
    y = np.asarray(data.train_labels, dtype=np.int64)
    size = model.spec.data.validation
    if size is None:
        return x, y, None, None if eager else np.arange(len(y))
    keep, held = stratified_split(y, size, model.spec.train.seed, list(data.classes))
    if eager:
        return x[keep], y[keep], (x[held], y[held]), None
    return x, y[keep], (model.preprocess(x[held]), y[held]), keep


def augmenter(model: Model) -> Augmenter | None:
    spec = model.spec.data.augment
    if spec is None or not spec.active:
        return None
    # Crops pad with black, as torchvision pads raw images: the model value of a raw 0 pixel.
    return Augmenter(spec, model.black_value, model.spec.train.seed)


def _test_scores(model: Model, x_test: np.ndarray, labels: np.ndarray, preprocessed: bool) -> dict[str, float]:
    if not len(x_test):
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    return evaluate(model, x_test, labels, preprocessed=preprocessed)


def _health(history: History, first_loss: float | None, classes: int, test_labels: np.ndarray, held_out: Any, ema: EmaSpec | None = None) -> list[str]:
    """The warnings a finished run deserves: a loss that grew, a final accuracy at chance level (with
    train.ema, the average is what was scored: on a short run it may still be near the first weights)."""
    if not history or first_loss is None:
        return []
    chance = None
    if len(test_labels):
        final = history.test["accuracy"] if history.test is not None else history[-1].test_accuracy
        chance = chance_warning(final, test_labels, "test")
    elif held_out is not None:
        chance = chance_warning(history[-1].val_accuracy, held_out[1], "validation")
    if chance and ema is not None:
        chance += (f", or train.ema's average (decay {ema.decay:g}: about the last {1 / (1 - ema.decay):,.0f} steps) "
                   f"still lags the training: for a short run lower the decay or set warmup_power")
    return [message for message in (loss_growth_warning(first_loss, history[-1].train_loss, classes), chance) if message]
