"""`cnnkit run`: train a spec (or go on with a run folder) and write the bundle.

The session itself — run folder, resume, progress, checkpoints, final bundle, report — is
cnnkit.training.session.train_session; this command parses the options, calls it and prints the result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ForceOption, SetOption, _fail, command


@command()
def run(
    ctx: typer.Context,
    spec: Annotated[Optional[Path], typer.Argument(help="The spec to train (not with --resume).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Bundle to write (default: <spec name>.cnnkit).")] = None,
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines (warnings are still shown).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 1, no bundle written) when training ends with a warning.")] = False,
    run_dir: Annotated[Optional[str], typer.Option("--run-dir", envvar="CNNKIT_RUN_DIR", show_default="runs",
                                                   help="Where new run folders go: DIR/<name>, DIR/<name>-2, ... (not with --resume).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Go on from a run folder's last checkpoint (e.g. runs/<name>).")] = None,
    force: ForceOption = False,
    backend: Annotated[str, typer.Option("--backend", help="numpy (default) or torch (PyTorch; DistributedDataParallel under torchrun).")] = "numpy",
    device: Annotated[str, typer.Option("--device", help="With --backend torch: cpu, cuda or mps.")] = "cpu",
    nproc_per_node: Annotated[Optional[int], typer.Option("--nproc-per-node", min=1, help="With --backend torch: train in N processes on this machine (as torchrun --standalone does), after checking the spec, settings and data once.")] = None,
):
    """Train the model a spec describes on its dataset; write a bundle and a run folder (spec, history.csv, checkpoints)."""
    from typer._click.core import ParameterSource

    from ..training.loop import Interrupted
    from ..training.session import StrictFailure, train_session
    from ..training.signals import stop_on_signals
    from ..training.steppers import check_backend, is_main_process

    check_backend(backend, device)
    if spec is None and resume is None:
        _fail("give a spec to train (cnnkit run SPEC.json), or --resume RUN_FOLDER to go on with a run", 2)
    if spec is not None and resume is not None:
        _fail(f"give a spec to train or --resume RUN_FOLDER, not both. Received: {spec} and --resume {resume}", 2)
    if resume is not None and ctx.get_parameter_source("run_dir") is not ParameterSource.COMMANDLINE:
        run_dir = None  # CNNKIT_RUN_DIR is a standing choice for new runs; a resume goes on in its own folder
    say = (lambda msg: None) if quiet else typer.echo
    if nproc_per_node is not None:
        _launch(spec, resume, run_dir, out, set_ or [], quiet, strict, force, backend, device, nproc_per_node)
        return
    # The session's signal handling covers this command's own last words too: a second Ctrl-C
    # cannot cut the message that says how to go on.
    with stop_on_signals() as stop:
        try:
            result = train_session(spec, set_ or [], resume=resume, out=out, run_dir=run_dir, force=force, strict=strict,
                                   backend=backend, device=device, say=say, bar=not quiet and sys.stderr.isatty(),
                                   warn=lambda message: typer.echo(f"warning: {message}", err=True), stop=stop)
        except Interrupted as exc:
            if not is_main_process():  # under torchrun rank 0 says it, once
                raise typer.Exit(130) from None
            _fail(str(exc), 130)
        except StrictFailure as exc:  # one line even with --debug, as the command always said it
            _fail(str(exc))
    if result is not None:
        written = f" (checkpoint {result.checkpoint_bytes:,} bytes, {result.checkpoint_seconds:.3f}s to write)" if result.checkpoint_bytes else ""
        say(f"wrote {result.target} and {result.folder}/ in {result.seconds:.1f}s total{written}")


def _launch(spec, resume, run_dir, out, sets, quiet, strict, force, backend, device, nproc) -> None:
    """--nproc-per-node: check once in this process, then start the training processes."""
    import os

    from ..backends.launch import launch_processes
    from ..training.session import train_session

    if backend != "torch":
        _fail(f"--nproc-per-node needs --backend torch (the NumPy backend trains in one process, on all cores). Received: --backend {backend}", 2)
    if os.environ.get("WORLD_SIZE"):
        _fail("--nproc-per-node starts the processes itself; under torchrun, leave it out", 2)
    train_session(spec, sets, resume=resume, run_dir=run_dir, out=out, force=force, backend=backend, device=device, check_only=True)
    what = [str(spec)] if spec is not None else ["--resume", str(resume)]
    args = ["run", *what, *(["--run-dir", run_dir] if run_dir is not None else []), "--backend", backend, "--device", device, *(["--out", out] if out else []),
            *(part for s in sets for part in ("--set", s)), *(["--quiet"] if quiet else []), *(["--strict"] if strict else []),
            *(["--force"] if force else [])]
    launch_processes(nproc, args)
