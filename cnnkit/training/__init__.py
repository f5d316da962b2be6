"""Training: the loop (loop.py), augmentation (augment.py), validation and early stopping (validation.py),
the run's health checks (health.py), the run folder and its checkpoints (runfolder.py, checkpoint.py) and
one whole `cnnkit run` session (session.py). ``fit`` trains a Model in place; ``training_metadata`` is what
a bundle records about it.
"""

from .health import TrainingWarning
from .history import EpochCallback, EpochRecord, History, StepCallback, final_summary, training_metadata
from .loop import evaluate, fit

__all__ = ["EpochCallback", "EpochRecord", "History", "StepCallback", "TrainingWarning", "evaluate", "final_summary", "fit", "training_metadata"]
