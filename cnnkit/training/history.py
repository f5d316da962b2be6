"""A run's record: one EpochRecord per epoch, the History of a run, and what a bundle keeps of it.

``training_metadata`` is what a bundle records about training (deterministic facts only);
``final_summary`` the end of a run with a validation split, as one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from ..data.dataset import Dataset
from ..runtime.model import Model


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    test_accuracy: float | None  # None with a validation split: the test set is scored once, at the end
    test_macro_f1: float | None
    lr: float  # the learning rate of the epoch's last optimizer step
    seconds: float  # wall time of the epoch's training steps (not stored in bundles: they are deterministic)
    val_loss: float | None = None  # the validation figures, with data.validation
    val_accuracy: float | None = None
    val_macro_f1: float | None = None

    def row(self) -> dict[str, Any]:
        """What a bundle's history keeps: the figures this run has, without the wall time."""
        return {k: v for k, v in asdict(self).items() if k != "seconds" and v is not None}

    def summary(self) -> str:
        """The epoch as one line of text (what `cnnkit run` prints)."""
        if self.val_loss is None:
            scores = f"test accuracy {self.test_accuracy:.4f}, macro-F1 {self.test_macro_f1:.4f}"
        else:
            scores = f"val loss {self.val_loss:.4f}, val accuracy {self.val_accuracy:.4f}, val macro-F1 {self.val_macro_f1:.4f}"
        return f"epoch {self.epoch}: train loss {self.train_loss:.4f}, {scores} ({self.seconds:.1f}s)"


class History(list):
    """The EpochRecords of a run, in order, and how the run ended.

    ``test``: the final test scores when the run had a validation split (else the last record holds
    them); ``validation``: the split's size, the monitored figure, the epoch whose weights were kept
    and whether training stopped early; ``warnings``: the TrainingWarning messages of the run.
    """

    def __init__(self, records: Iterable[EpochRecord] = ()):
        super().__init__(records)
        self.test: dict[str, float] | None = None
        self.validation: dict[str, Any] | None = None
        self.warnings: list[str] = []


StepCallback = Callable[[int, int, int, float], None]  # (epoch, examples_done, examples_total, batch_loss)
EpochCallback = Callable[[EpochRecord], None]


def final_summary(metadata: dict[str, Any]) -> str | None:
    """With a validation split, the end of a run as one line: the test scores and whose weights earned them."""
    validation, metrics = metadata.get("validation"), metadata.get("metrics", {})
    if not validation:
        return None
    stopped = f"; stopped early after epoch {metadata['history'][-1]['epoch']}" if validation["stopped_early"] else ""
    return (f"test accuracy {metrics['test_accuracy']:.4f}, macro-F1 {metrics['test_macro_f1']:.4f} with the weights of "
            f"epoch {validation['weights_from_epoch']} (best {validation['monitor']}: epoch {validation['best_epoch']}{stopped})")


def training_metadata(model: Model, data: Dataset, history: list[EpochRecord]) -> dict[str, Any]:
    """What a bundle records about training: deterministic facts only (no wall-clock times)."""
    from .. import __version__

    validation = getattr(history, "validation", None)
    test = getattr(history, "test", None)
    last = history[-1] if history else None
    if test is None and last is not None:
        test = {"accuracy": last.test_accuracy, "macro_f1": last.test_macro_f1}
    held = validation["examples"] if validation else 0
    meta: dict[str, Any] = {
        "cnnkit_version": __version__,
        "seed": model.spec.train.seed,
        "dataset": model.spec.data.dataset,
        "train_examples": int(len(data.train_labels)) - held,
        "test_examples": int(len(data.test_labels)),
        "history": [r.row() for r in history],
        "metrics": {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]} if test else {},
    }
    if validation:
        meta["validation"] = dict(validation)
    if getattr(history, "warnings", None):
        meta["warnings"] = list(history.warnings)
    return meta
