"""Training and evaluation: shuffled mini-batch updates, per-epoch loss, accuracy and macro-F1."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .data.fashion_mnist import Dataset
from .errors import DataError
from .losses import softmax_cross_entropy
from .metrics import accuracy, macro_f1
from .model import Model
from .optim import OPTIMIZERS, build_schedule, clip_grad_norm


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    test_accuracy: float
    test_macro_f1: float
    lr: float  # the learning rate of the epoch's last optimizer step
    seconds: float  # wall time of the epoch's training steps (not stored in bundles: they are deterministic)


StepCallback = Callable[[int, int, int, float], None]  # (epoch, examples_done, examples_total, batch_loss)
EpochCallback = Callable[[EpochRecord], None]


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, preprocessed: bool = False) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model`` on labelled images."""
    predicted = model.predict(images, batch_size=batch_size, preprocessed=preprocessed)
    labels = np.asarray(labels, dtype=np.int64)
    return {"accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(labels, predicted, model.output_shape[-1])}


def fit(
    model: Model,
    data: Dataset,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[EpochRecord]:
    """Train ``model`` in place with its spec's ``train`` settings; returns one record per epoch.

    Each epoch visits the training set in an order drawn from the spec's seed; batch_size 1 with
    plain SGD is the seed notebook's algorithm. After each epoch the test set is evaluated.
    """
    settings = model.spec.train
    classes = model.output_shape[-1]
    # Checked before any training time is spent: a bundle pairs each output with a class name, and
    # a model whose outputs do not match the dataset's classes would save a bundle no one can load.
    if len(data.classes) != classes:
        raise DataError(f"the model has {classes} outputs but the dataset has {len(data.classes)} classes; "
                        f"make the last layer produce {len(data.classes)} outputs (e.g. dense units={len(data.classes)})")
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{split} labels range over {labels.min()}..{labels.max()}, but the model has {classes} outputs")
    x = model.preprocess(data.train_images)  # (N, C, H, W) float32, converted once
    y = np.asarray(data.train_labels, dtype=np.int64)
    x_test = model.preprocess(data.test_images)
    optimizer_cls = OPTIMIZERS[settings.optimizer["type"]]
    optimizer = optimizer_cls(optimizer_cls.Params.model_validate(settings.optimizer), model.weights)
    rng = np.random.default_rng(settings.seed)
    n, batch = len(x), settings.batch_size
    schedule = build_schedule(settings.schedule, optimizer.lr, total_steps=settings.epochs * math.ceil(n / batch))
    step = 0  # optimizer steps so far: the schedule's clock
    history: list[EpochRecord] = []
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(n) if settings.shuffle else np.arange(n)
        start_time = time.perf_counter()
        total_loss = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            logits, backprop = model.forward(x[idx], train=True, logits=True)
            loss, dlogits = softmax_cross_entropy(logits, y[idx], settings.label_smoothing)
            grads = backprop(dlogits)
            if settings.clip_grad_norm is not None:
                clip_grad_norm(grads, settings.clip_grad_norm)
            schedule.apply(optimizer, step)  # sets optimizer.lr (and momentum, for onecycle)
            optimizer.step(model.weights, grads)
            step += 1
            total_loss += loss * len(idx)
            if on_step is not None:
                on_step(epoch, min(start + batch, n), n, loss)
        seconds = time.perf_counter() - start_time
        if not np.isfinite(total_loss):
            raise DataError(f"training diverged in epoch {epoch} (loss is {total_loss}); lower train.optimizer.lr")
        scores = evaluate(model, x_test, data.test_labels, preprocessed=True) if len(x_test) else {"accuracy": float("nan"), "macro_f1": float("nan")}
        record = EpochRecord(epoch, total_loss / n, scores["accuracy"], scores["macro_f1"], optimizer.lr, seconds)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


def training_metadata(model: Model, data: Dataset, history: list[EpochRecord]) -> dict[str, Any]:
    """What a bundle records about training: deterministic facts only (no wall-clock times)."""
    from . import __version__

    last = history[-1] if history else None
    return {
        "cnnkit_version": __version__,
        "seed": model.spec.train.seed,
        "dataset": model.spec.data.dataset,
        "train_examples": int(len(data.train_labels)),
        "test_examples": int(len(data.test_labels)),
        "history": [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history],
        "metrics": {"test_accuracy": last.test_accuracy, "test_macro_f1": last.test_macro_f1} if last else {},
    }
