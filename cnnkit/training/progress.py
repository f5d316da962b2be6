"""What `cnnkit run` shows while it trains: a progress bar or progress lines, and one line per epoch.

On a terminal, a bar on stderr (gone when training ends) shows the epoch, the step, images per
second, the running mean loss of the epoch and the time left for the whole run (from this epoch's
speed). Without a terminal (a log file, CI, a pipe) the same figures come as a line each time an
epoch passes another tenth, so a log never sits silent for a whole epoch (the seed spec's epoch of
60,000 batch-1 steps takes minutes); epochs of seconds, whose own lines come often enough, get none
(a tenth is reported only when ``LINE_SECONDS`` have passed since the epoch started or the last
line). Each finished epoch prints its line, with the validation figures when the run has them
(``EpochRecord.summary``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .history import EpochRecord


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


LINE_SECONDS = 5.0


class Progress:
    """``on_step`` and ``on_epoch`` callbacks for ``fit``; use as a context manager around training."""

    def __init__(self, say: Callable[[str], None], bar: bool, epochs: int, batch_size: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.say, self.epochs, self.batch_size, self.clock = say, epochs, batch_size, clock
        self.bar = None
        if bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                    console=Console(stderr=True, highlight=False), transient=True)
        self.task = None
        self.epoch = None
        self.tenths = 0  # tenths of the epoch already passed (reported by a line or not)
        self.start_done = self.last_done = 0
        self.start_time = self.line_time = 0.0
        self.loss_sum = 0.0
        self.seen = 0

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def line(self, epoch: int, done: int, total: int) -> tuple[str, str]:
        """The bar's description and figures after ``done`` of ``total`` examples of ``epoch``."""
        elapsed = self.clock() - self.start_time
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        left = (total - done) + (self.epochs - epoch) * total
        eta = _duration(left / rate) if rate > 0 else "?"
        steps = math.ceil(total / self.batch_size)
        loss = self.loss_sum / self.seen if self.seen else float("nan")
        return (f"epoch {epoch}/{self.epochs} step {math.ceil(done / self.batch_size)}/{steps}",
                f"{rate:,.0f} img/s  loss {loss:.4f}  ETA {eta}")

    def on_step(self, epoch: int, done: int, total: int, loss: float) -> None:
        if self.epoch != epoch:  # a new epoch (or the first step after a resume): the speed is timed from here
            self.epoch, self.loss_sum, self.seen = epoch, 0.0, 0
            self.start_done, self.last_done = done, done - min(self.batch_size, done)
            self.tenths = self.last_done * 10 // total
            self.start_time = self.line_time = self.clock()
        self.loss_sum += loss * (done - self.last_done)
        self.seen += done - self.last_done
        self.last_done = done
        if self.bar is None:
            self._say_tenth(epoch, done, total)
            return
        description, info = self.line(epoch, done, total)
        if self.task is None:
            self.task = self.bar.add_task(description, total=total, info=info)
        self.bar.update(self.task, completed=done, total=total, description=description, info=info)

    def _say_tenth(self, epoch: int, done: int, total: int) -> None:
        """A line when this step passed another tenth of a slow epoch (the epoch's end has its own line)."""
        tenths = done * 10 // total
        if tenths <= self.tenths or done >= total:
            return
        self.tenths = tenths
        if self.clock() - self.line_time < LINE_SECONDS:
            return
        self.line_time = self.clock()
        description, info = self.line(epoch, done, total)
        self.say(f"{description} ({done / total:.0%})  {info}")

    def on_epoch(self, record: EpochRecord) -> None:
        self.epoch = None
        self.say(record.summary())
