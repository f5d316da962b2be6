"""Ctrl-C and SIGTERM during a run: stop at the end of a step, or at once where nothing is lost.

While ``stop_on_signals`` is active, a signal stops the work at once (KeyboardInterrupt; SIGTERM as
``errors.Terminated``) — loading data, scoring an epoch, the final test scoring, writing the final
bundle, drawing the report: work a resume simply does again. Inside ``deferred()`` — the training
steps and the epoch-end checkpoint — the first signal only asks training to stop at the end of the
current step, where a checkpoint is written and a resume goes on to the same bytes; a second one
stops at once there too. One KeyboardInterrupt is raised at most: later signals are ignored while
the stop is reported, so its one-line message gets printed whole.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ..errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The signals received so far; called (with the training state, unused) it says whether to stop."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.raised = False
        self._deferring: list[bool] = []

    def __call__(self, state=None) -> bool:
        return bool(self.received)

    def handler(self, signum, frame) -> None:
        self.received.append(signum)
        if self.raised or (self._deferring and self._deferring[-1] and len(self.received) == 1):
            return  # a stop is under way, or the step ends first
        self._stop()

    def _stop(self) -> None:
        self.raised = True
        raise Terminated() if self.received[0] == signal.SIGTERM else KeyboardInterrupt()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block the first signal only asks to stop (see ``__call__``); a second stops at once."""
        with self._mode(True):
            yield

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Within this block (inside ``deferred``) a signal stops at once; one received before it stops here."""
        if self.received and not self.raised:
            self._stop()
        with self._mode(False):
            yield

    @contextlib.contextmanager
    def _mode(self, deferring: bool) -> Iterator[None]:
        self._deferring.append(deferring)
        try:
            yield
        finally:
            self._deferring.pop()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """Route SIGINT and SIGTERM to a :class:`StopSignals` (the previous handlers come back at the end).

    Outside the main thread Python cannot install handlers: the StopSignals then never fires."""
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop.handler) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
