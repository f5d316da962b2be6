"""``cnnkit run SPEC --backend torch --nproc-per-node N``: start the DistributedDataParallel processes
that torchrun would, after checking in this one process what each of them would otherwise fail on.

Under plain ``torchrun`` every process checks the spec, the settings and the data by itself, so one
bad value was printed once per process and followed by torchrun's ChildFailedError traceback. Here
the launcher checks first (``train_session(..., check_only=True)``), then starts the processes with
torch's own launcher (``torch.distributed.launcher.api``, what ``torchrun --standalone`` runs); a
process that fails anyway has said why itself, and the launcher adds one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid

from ..errors import CnnkitError
from ..export import require


def launch_processes(nproc: int, args: list[str]) -> None:
    """Run ``python -m cnnkit <args>`` in ``nproc`` processes on this machine, as ``torchrun
    --standalone --nproc-per-node nproc`` does. A failed process is one CnnkitError."""
    require("torch", extra="torch", purpose="--nproc-per-node")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0)
    # torchrun's default with several processes: without it each process starts a thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with _quiet_launcher():
        try:
            elastic_launch(config, sys.executable)("-m", "cnnkit", *args)
        except ChildFailedError as exc:
            codes = sorted({failure.exitcode for failure in exc.failures.values()})
            raise CnnkitError(f"{len(exc.failures)} of {nproc} training processes failed (exit code {', '.join(map(str, codes))}); "
                              f"the first process's error is above") from None


@contextlib.contextmanager
def _quiet_launcher():
    """torch's launcher logs each failure with its own timestamps; the processes and the line above say it."""
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
