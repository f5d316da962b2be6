"""Ctrl-C and SIGTERM at every moment of `cnnkit run`, sent for real to a subprocess at the moment
under test (issue 23, findings 11 and 12): while the last epoch is scored, while the test set is
scored at the end, twice in the middle of a step, and twice while the report is drawn."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

import cnnkit
from cnnkit.training.checkpoint import read_checkpoint
from cnnkit.training.session import train_session

# Runs `cnnkit run ARGS...` after patching MODULE:NAME so that its CALL-th call sends the process
# SIGNAL (and, with TWICE, the same signal again DELAY seconds later from another thread).
SCRIPT = textwrap.dedent("""
    import importlib, os, signal, sys, threading
    where, call, signum, twice, delay = sys.argv[1:6]
    module, _, path = where.partition(":")
    target = importlib.import_module(module)
    *owners, name = path.split(".")
    for owner in owners:
        target = getattr(target, owner)
    real, calls = getattr(target, name), []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(call):
            if twice == "1":
                threading.Timer(float(delay), os.kill, (os.getpid(), int(signum))).start()
            os.kill(os.getpid(), int(signum))
        return real(*args, **kwargs)

    setattr(target, name, patched)
    sys.argv = ["cnnkit", *sys.argv[6:]]
    from cnnkit.cli.app import main
    main()
""")


def run_with_signal(where: str, call: int, signum: int, *args, twice: bool = False, delay: float = 0.001):
    env = {**os.environ, "CNNKIT_OFFLINE": "1", "CNNKIT_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SCRIPT, where, str(call), str(int(signum)), "1" if twice else "0", str(delay), "run", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def uninterrupted(spec_file, tmp_path, monkeypatch, *overrides):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    result = train_session(spec_file, list(overrides), out=str(tmp_path / "whole.cnnkit"), run_dir=tmp_path / "whole", say=lambda m: None, warn=lambda m: None)
    return result.target.read_bytes()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_last_epoch_is_scored_stops_there_and_resume_finishes(signum, spec_file, tmp_path, monkeypatch):
    """It was ignored: the run scored, wrote its bundle and exited 0."""
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    # cnnkit.training.loop._test_scores: called once per epoch without validation; the 3rd is the last epoch's.
    result = run_with_signal("cnnkit.training.loop:_test_scores", 3, signum, spec_file, "--out", out, "--run-dir", runs, "-q")
    assert result.returncode == 130, result
    last = runs / "tiny" / "last.cnnkit"
    assert result.stderr == (f"error: training stopped at epoch 3 after its 15 steps, while scoring it; checkpoint {last}; "
                             f"go on with: cnnkit run --resume {runs / 'tiny'} --out {out}\n")
    assert not out.exists()
    _, saved = read_checkpoint(last)
    assert (saved["epoch"], saved["step"], saved["examples"]) == (3, 15, 240)  # trained, not yet scored
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    train_session(None, resume=runs / "tiny", out=str(out), say=lambda m: None, warn=lambda m: None)
    assert out.read_bytes() == uninterrupted(spec_file, tmp_path, monkeypatch)


def test_a_signal_while_the_test_set_is_scored_at_the_end_stops_there(spec_file, tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    validated = ("--set", "data.validation=40")  # the test set is scored once, after the last epoch
    result = run_with_signal("cnnkit.training.loop:_test_scores", 1, signal.SIGINT, spec_file, *validated, "--out", out, "--run-dir", runs, "-q")
    assert result.returncode == 130, result
    assert result.stderr == (f"error: training stopped after its last epoch, while scoring the test set; checkpoint {runs / 'tiny' / 'last.cnnkit'}; "
                             f"go on with: cnnkit run --resume {runs / 'tiny'} --out {out}\n")
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    train_session(None, resume=runs / "tiny", out=str(out), say=lambda m: None, warn=lambda m: None)
    assert out.read_bytes() == uninterrupted(spec_file, tmp_path, monkeypatch, "data.validation=40")


def test_two_signals_in_a_step_stop_at_once_and_name_the_checkpoint_to_resume(spec_file, tmp_path, monkeypatch):
    """The second Ctrl-C used to end the run with 'error: interrupted' and no resume hint."""
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    # The 20th SGD step (epoch 2, step 5) is cut in the middle by the second signal.
    result = run_with_signal("cnnkit.optim.sgd:SGD.step", 20, signal.SIGINT, spec_file, "--out", out, "--run-dir", runs, "-q",
                             twice=True, delay=0.0)
    assert result.returncode == 130, result
    assert result.stderr == (f"error: stopped at once by a second signal; {runs / 'tiny' / 'last.cnnkit'} holds the run after epoch 1; "
                             f"go on from there with: cnnkit run --resume {runs / 'tiny'} --out {out}\n")
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "1")
    train_session(None, resume=runs / "tiny", out=str(out), say=lambda m: None, warn=lambda m: None)
    assert out.read_bytes() == uninterrupted(spec_file, tmp_path, monkeypatch)


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.02])
def test_ctrl_c_twice_while_the_report_is_drawn_leaves_no_half_report(delay, spec_file, tmp_path):
    """It said 'error: interrupted' though the bundle was complete, left a half report, and the
    second Ctrl-C 1 ms later printed a traceback."""
    pytest.importorskip("matplotlib")
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    result = run_with_signal("cnnkit.report.plots:confusion_heatmap", 1, signal.SIGINT, spec_file, "--out", out, "--run-dir", runs, "-q",
                             twice=True, delay=delay)
    folder = runs / "tiny"
    assert result.returncode == 130, result
    assert result.stderr == (f"error: stopped while drawing the report: {out} and {folder} are complete, the report was not written "
                             f"(draw it with: cnnkit report {out} --out {folder / 'report'})\n")
    assert cnnkit.load(out).metadata["history"][-1]["epoch"] == 3
    assert sorted(p.name for p in folder.iterdir()) == ["delivered.json", "history.csv", "last.cnnkit", "spec.json"]  # no report, no partial folder


def test_a_report_drawn_again_replaces_the_old_one_whole(spec_file, tmp_path):
    pytest.importorskip("matplotlib")
    runs = tmp_path / "runs"
    train_session(spec_file, out=str(tmp_path / "m.cnnkit"), run_dir=runs, say=lambda m: None, warn=lambda m: None)
    report = runs / "tiny" / "report"
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert sorted(before) == ["confusion.png", "curves.png", "index.html"]  # the tiny model makes no mistakes: no worst.png
    result = run_with_signal("cnnkit.report.plots:confusion_heatmap", 1, signal.SIGINT, "--resume", runs / "tiny", "--out", tmp_path / "n.cnnkit")
    assert result.returncode == 130 and "the report was not written" in result.stderr, result
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # the earlier report stays whole
    assert re.search(r"finished all its epochs", result.stdout) and json.loads((runs / "tiny" / "spec.json").read_text())["name"] == "tiny"
