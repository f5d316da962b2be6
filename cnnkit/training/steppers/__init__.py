"""Steppers: the engines the one training loop (training/loop.py) drives, as Keras 3 backends plug a
``train_step`` into a ``fit``. A stepper does the step — forward pass and loss, backward pass,
gradient clipping, the optimizer update — and hands the trained weights back (``sync``); the loop
owns everything else: the order, augmentation, the schedule, validation and early stopping, history,
checkpoints, signals, progress and health checks. So every engine gets the run folder, ``--resume``
and the report from the same code.

``numpy.py`` is cnnkit's own runtime; ``torch.py`` is PyTorch on a CPU, a GPU or several processes
under torchrun (imported only when asked for: torch is an extra). Under several processes each one
runs the loop; ``is_main`` (rank 0) alone scores, decides and writes, and the others follow it
through ``any_rank`` (a stop asked by any process) and ``share`` (rank 0's decision at an epoch end).
"""

from __future__ import annotations

import os

from ...errors import CnnkitError
from .base import Stepper

BACKENDS = ("numpy", "torch")


def check_backend(backend: str, device: str) -> None:
    """CnnkitError unless ``backend`` is numpy or torch and ``device`` is cpu for numpy (names only: nothing is imported)."""
    if backend not in BACKENDS:
        raise CnnkitError(f"--backend must be numpy or torch. Received: {backend!r}")
    if backend == "numpy" and device != "cpu":
        raise CnnkitError(f"--device {device} needs --backend torch (the NumPy backend runs on the CPU)")


def make_stepper(backend: str = "numpy", device: str = "cpu") -> Stepper:
    """The stepper of ``backend`` on ``device``; CnnkitError for a backend or device that cannot run here."""
    check_backend(backend, device)
    if backend == "numpy":
        from .numpy import NumpyStepper

        return NumpyStepper()
    from .torch import TorchStepper

    return TorchStepper(device)


def is_main_process() -> bool:
    """False in the processes other than rank 0 under torchrun: they neither print nor write."""
    return int(os.environ.get("RANK", "0")) == 0


__all__ = ["BACKENDS", "Stepper", "check_backend", "is_main_process", "make_stepper"]
