"""`cnnkit run` with its run folder, --resume, Ctrl-C and SIGTERM in a real process, and the progress display."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.training.checkpoint import read_checkpoint

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_a_numbered_run_folder_and_resume_finishes_it(spec_file, tmp_path):
    runs = tmp_path / "runs"
    first = cli("run", spec_file, "--out", tmp_path / "a.cnnkit", "--run-dir", runs)
    assert first.exit_code == 0, first.output
    assert f"run folder {runs / 'tiny'}" in first.stdout and re.search(r"checkpoint [\d,]+ bytes", first.stdout)
    second = cli("run", spec_file, "--out", tmp_path / "b.cnnkit", "--run-dir", runs, "-q")
    assert second.exit_code == 0 and second.stdout == ""
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny-2"]
    assert (tmp_path / "a.cnnkit").read_bytes() == (tmp_path / "b.cnnkit").read_bytes()
    # resuming a finished run only writes the bundle again, to the same bytes
    again = cli("run", "--resume", runs / "tiny", "--out", tmp_path / "c.cnnkit")
    assert again.exit_code == 0, again.output
    assert "epoch 1:" not in again.stdout
    # it says so, instead of "resuming at epoch <past the last>, step 0" and "checkpoint 0 bytes"
    assert f"{runs / 'tiny'} finished all its epochs; writing its bundle" in again.stdout and "resuming" not in again.stdout
    assert "checkpoint" not in again.stdout.splitlines()[-1], again.stdout
    assert (tmp_path / "c.cnnkit").read_bytes() == (tmp_path / "a.cnnkit").read_bytes()
    # a checkpoint is a bundle for predict and evaluate
    assert cli("evaluate", runs / "tiny" / "last.cnnkit", "--json").exit_code == 0


def test_run_needs_a_spec_or_resume_not_both(spec_file, tmp_path):
    result = cli("run")
    assert result.exit_code == 2 and result.stderr.startswith("error: give a spec to train (cnnkit run SPEC.json), or --resume")
    result = cli("run", spec_file, "--resume", tmp_path)
    assert result.exit_code == 2 and result.stderr.startswith("error: give a spec to train or --resume RUN_FOLDER, not both")
    result = cli("run", "--resume", tmp_path / "nothing")
    assert result.exit_code == 1 and result.stderr.strip() == f"error: cannot resume {tmp_path / 'nothing'}: not a run folder (no such directory)"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_a_step_with_a_loadable_checkpoint_and_resume_finishes(signum, spec_file, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    env = {**os.environ, "CNNKIT_OFFLINE": "1", "CNNKIT_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cnnkit.cli", "run", str(spec_file), "--set", "train.epochs=400", "--out", str(out), "--run-dir", str(runs)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = runs / "tiny" / "last.cnnkit"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch's checkpoint: training is under way, the handlers are in place
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    # The signal lands inside an epoch's steps or, epochs being short here, while an epoch is scored.
    match = re.fullmatch(r"error: training stopped at epoch (\d+)(?:, step (\d+) of 15| after its 15 steps, while scoring it); "
                         r"checkpoint (.+); go on with: cnnkit run --resume (.+)\n", stderr)
    # the command writes the bundle this run was asked for (without --out it wrote tiny.cnnkit, maybe over another)
    assert match and match[3] == str(last) and match[4] == f"{runs / 'tiny'} --out {out}", stderr
    assert not out.exists()
    model, saved = read_checkpoint(last)
    assert saved["epoch"] == int(match[1]) and (match[2] is None or saved["step"] == int(match[2]))
    assert model.predict(np.zeros((1, 28, 28), np.uint8)).shape == (1,)
    assert cli("inspect", last).exit_code == 0
    resumed = cli("run", "--resume", runs / "tiny", "--out", out, "--set", "train.epochs=" + match[1], "-q")
    assert resumed.exit_code == 0, resumed.output
    assert cnnkit.load(out).metadata["history"][-1]["epoch"] == int(match[1])


def test_progress_bar_shows_step_speed_loss_and_eta(monkeypatch):
    from cnnkit.training.progress import Progress

    lines = []
    progress = Progress(lines.append, False, epochs=3, batch_size=10)
    progress.on_step(2, 10, 95, 1.0)
    progress.on_step(2, 20, 95, 3.0)
    description, info = progress.line(2, 20, 95)
    assert description == "epoch 2/3 step 2/10"
    assert re.fullmatch(r"[\d,]+ img/s  loss 2\.0000  ETA (\d+:\d\d|\?)", info), info


def test_without_a_terminal_a_slow_epoch_gets_a_line_every_tenth():
    """A log (CI, a file, a pipe) gets a line at every tenth of a slow epoch, so a batch-1 epoch of minutes is not silent."""
    from cnnkit.training.progress import Progress

    now = [0.0]

    def clock():
        return now[0]

    def steps(progress, epoch, dones, seconds_per_step):
        for done in dones:
            now[0] += seconds_per_step
            progress.on_step(epoch, done, 1000, 0.5)

    lines = []
    progress = Progress(lines.append, False, epochs=2, batch_size=1, clock=clock)
    steps(progress, 1, range(1, 1001), 0.125)  # 125 s an epoch (binary fractions: exact sums)
    assert [re.search(r"\((\d+)%\)", line)[1] for line in lines] == [str(p) for p in range(10, 100, 10)]
    assert lines[0] == "epoch 1/2 step 100/1000 (10%)  8 img/s  loss 0.5000  ETA 3:57"  # 1,900 images left at 8/s

    lines.clear()  # resumed in the middle of epoch 2: the tenths already behind it are not repeated
    steps(progress, 2, range(501, 1001), 0.125)
    assert [re.search(r"\((\d+)%\)", line)[1] for line in lines] == ["60", "70", "80", "90"]

    lines.clear()  # an epoch of 4 s: its own line comes soon enough, tenths would only be noise
    steps(Progress(lines.append, False, epochs=1, batch_size=1, clock=clock), 1, range(1, 1001), 1 / 256)
    assert lines == []


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_run_folder(spec_file, tmp_path):
    """A validation split larger than the training set is found after the data is read, when the
    folder already holds spec.json: the folder is removed again, and the next run gets the name."""
    runs = tmp_path / "runs"
    bad = cli("run", spec_file, "--set", "data.validation=100000", "--out", tmp_path / "bad.cnnkit", "--run-dir", runs, "--quiet")
    assert bad.exit_code == 1 and "data.validation" in bad.stderr, bad.output
    assert not runs.exists() or list(runs.iterdir()) == []
    good = cli("run", spec_file, "--set", "train.epochs=1", "--out", tmp_path / "good.cnnkit", "--run-dir", runs, "--quiet")
    assert good.exit_code == 0, good.output
    assert [p.name for p in runs.iterdir()] == ["tiny"]
