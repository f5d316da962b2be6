"""The Typer ``app`` of the `cnnkit` command, the ``command`` decorator every command is registered with
(cnnkit errors, signals and warnings become one line on stderr), the option types several commands
share, and ``main``. The command modules import from here; ``cnnkit/cli/__init__.py`` imports them.

Every cnnkit error becomes one line on stderr and exit code 1; usage errors exit 2 (Click's rule).
``--debug`` shows the traceback instead.
"""


from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from ..errors import CnnkitError, CnnkitWarning, Terminated


class _PlainHelp:
    """Help that shows how to type a command line, whatever Typer's version renders by default.

    A flag takes no value, so its help shows none (Typer 0.29 printed ``--json <bool>``, and users
    then typed ``--json true``, which fails); the usage line names arguments as Click does, ``BUNDLE
    IMAGES...`` and ``[SPEC]`` for an optional one (Typer 0.29 printed ``{bundle}``). Parameters are
    told apart by Click's attributes, which Typer keeps whether it uses Click or its own copy of it.
    """

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # what the help shows after the flag's name: nothing
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        if isinstance(self, TyperGroup):
            return super().collect_usage_pieces(ctx)
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class _Command(_PlainHelp, TyperCommand):
    pass


class _Group(_PlainHelp, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    help="cnnkit: convolutional networks from JSON specs, trained with NumPy, shipped as one bundle.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}

SetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a spec value: dotted.path=JSON, e.g. train.epochs=1 (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AllowMismatchOption = Annotated[
    bool, typer.Option("--allow-provider-mismatch", help="Load even if another distribution than the bundle recorded provides a layer type (a warning says which).")
]
NoTtaOption = Annotated[bool, typer.Option("--no-tta", help="Classify each image alone, without the bundle's test-time augmentation (predict.tta).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing file that is not ours, or is read-only.")]
# evaluate and report: where the test data is now (a bundle records its data paths as given where it was trained)
DataOption = Annotated[Optional[Path], typer.Option("--data", help="The test data: an .npz file (npz), a folder of class folders, all of it test data (image-folder), a folder with the IDX test files (fashion-mnist, idx-folder).")]
DataDirOption = Annotated[Optional[Path], typer.Option("--data-dir", help="Where the data is: the source's data.dir (fashion-mnist), data.root (torchvision) or data.path (the others) in place of the bundle spec's.")]
DataSetOption = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override the bundle spec's data section: data.KEY=JSON, e.g. data.test_path=photos/test (repeatable).")]


def _on_sigterm(signum, frame):
    raise Terminated()


def ignore_signals() -> None:
    """Ignore Ctrl-C and SIGTERM (main thread only) while a stop is reported or the process ends:
    a second Ctrl-C must not cut the one-line message into a traceback."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def _fail(message: str, code: int = 1):
    if code in (130, 143):  # a stop is being reported: another Ctrl-C must not cut the message (the command restores the handlers)
        ignore_signals()
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def command(*args, **kwargs):
    """app.command() that maps CnnkitError (and stray bugs) to one line on stderr and exit 1."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            main = threading.current_thread() is threading.main_thread()
            previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)} if main else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", CnnkitWarning)
                    warnings.showwarning = _show_warning
                    return fn(*a, **kw)
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except KeyboardInterrupt as exc:
                ignore_signals()  # first: a second Ctrl-C must not cut this message into a traceback
                from ..bundle import InterruptedAfterWrite

                code = 143 if isinstance(getattr(exc, "signal_exception", exc), Terminated) else 130
                what = "terminated (SIGTERM)" if code == 143 else "interrupted"
                if isinstance(exc, InterruptedAfterWrite):
                    _fail(f"{what} just after {exc.path} was written completely; it is a whole, valid file", code)
                _fail(what, code)
            except BrokenPipeError:
                # The reader went away (`cnnkit layers --json | head`): stop quietly, as Unix tools do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(1) from None
            except CnnkitError as exc:
                if _state["debug"]:
                    raise
                if os.environ.get("LOCAL_RANK", "0") != "0":
                    # Under torchrun every process reads the same input and fails the same way: the
                    # first process on each machine says it, the others exit quietly. They wait a
                    # moment first: torchrun stops every process once one has exited, so one that
                    # exits at once can have the first one stopped before it has said why.
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # being stopped while waiting is the quiet exit
                    time.sleep(QUIET_RANK_WAIT)
                    raise typer.Exit(1) from None
                _fail(str(exc))
            except Exception as exc:
                if _state["debug"]:
                    raise
                _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)

        return app.command(*args, cls=_Command, **kwargs)(wrapper)

    return decorate


# Seconds a torchrun process other than the first on its machine waits before it exits quietly on
# an error every process meets (above); the launcher usually stops it sooner.
QUIET_RANK_WAIT = 5.0

_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """cnnkit's own warnings as one line on stderr ("warning: ..."); others as Python shows them."""
    if issubclass(category, CnnkitWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False):
    _state["debug"] = debug


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def main():
    try:
        app()
    except KeyboardInterrupt:  # between commands' own handlers, e.g. while Click parses arguments
        ignore_signals()
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    finally:  # the command is done: a late Ctrl-C must not turn its exit into a traceback or a death by SIGINT
        ignore_signals()
