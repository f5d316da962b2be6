"""`cnnkit run`'s outputs under pressure: another run's checkpoint as --out, a full disk under the run
folder, --run-dir with --resume or empty, and the free-space estimate (issue 23, findings 7, 9, 10)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit import bundle
from cnnkit.cli import app
from cnnkit.training.resume import resume_run
from cnnkit.training.session import train_session
from conftest import SEED_SPEC

runner = CliRunner()


def cli(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def test_out_onto_a_runs_checkpoint_needs_force(spec_file, tmp_path):
    runs = tmp_path / "runs"
    assert cli("run", spec_file, "-q", "--out", tmp_path / "a.cnnkit", "--run-dir", runs).exit_code == 0
    last = runs / "tiny" / "last.cnnkit"
    before = last.read_bytes()
    refused = cli("run", spec_file, "-q", "--set", "train.epochs=1", "--out", last, "--run-dir", runs)
    assert refused.exit_code == 1 and refused.stderr.startswith(f"error: refusing to overwrite {last}: it is the checkpoint of the run in {runs / 'tiny'}")
    assert last.read_bytes() == before and sorted(p.name for p in runs.iterdir()) == ["tiny"]  # refused before training
    forced = cli("run", spec_file, "-q", "--set", "train.epochs=1", "--out", last, "--run-dir", runs, "--force")
    assert forced.exit_code == 0, forced.output
    assert bundle.read(last).version == (1, 1)


def _can_mount_privately() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_privately(), reason="needs unprivileged user and mount namespaces (unshare -rm)")
def test_a_run_folder_without_room_for_checkpoints_is_refused_before_training(spec_file, tmp_path):
    """A real full disk: a 48 KiB tmpfs mounted in a private mount namespace (unshare -rm: only this
    process tree sees it; it disappears with it) holds the run folders, --out has room."""
    runs, out = tmp_path / "small", tmp_path / "m.cnnkit"
    runs.mkdir()
    script = 'mount -t tmpfs -o size=48k tmpfs "$1" && shift && exec "$@"'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", str(runs), sys.executable, "-m", "cnnkit.cli",
               "run", str(spec_file), "--out", str(out), "--run-dir", str(runs)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "CNNKIT_OFFLINE": "1"})
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"error: cannot train in {runs}: its checkpoints need about 0.1 MB but only 0.0 MB are free there; "
                                    "free some space or give another --run-dir"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == "" and not out.exists()


def test_checkpoints_that_cannot_be_written_cost_no_training(spec_file, tmp_path, monkeypatch):
    """ENOSPC simulated in-process at each last.cnnkit write from epoch 2 on: training goes on,
    the bundle is the one an uninterrupted run writes, and the folder still resumes from epoch 1's checkpoint."""
    whole = train_session(spec_file, out=str(tmp_path / "whole.cnnkit"), run_dir=tmp_path / "a", say=lambda m: None, warn=print)
    real = bundle.write_atomic
    writes = []

    def full_after_the_first_checkpoint(path, data):
        if os.path.basename(path) == "last.cnnkit":
            writes.append(path)
            if len(writes) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(bundle, "write_atomic", full_after_the_first_checkpoint)
    warned = []
    result = train_session(spec_file, out=str(tmp_path / "m.cnnkit"), run_dir=tmp_path / "b", say=lambda m: None, warn=warned.append)
    assert (tmp_path / "m.cnnkit").read_bytes() == whole.target.read_bytes()
    last = result.folder / "last.cnnkit"
    assert warned == [
        f"cannot write checkpoint {last}: No space left on device; training goes on, and each epoch's end tries again ({last} holds the run after epoch 1)",
        f"the run folder's last checkpoint could not be written (cannot write checkpoint {last}: No space left on device); {last} holds the run after epoch 1",
    ]
    monkeypatch.undo()
    _, state = resume_run(result.folder)
    assert (state.epoch, state.step) == (2, 0)


def test_run_dir_is_for_new_runs_and_never_empty(spec_file, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    assert cli("run", spec_file, "-q", "--out", tmp_path / "a.cnnkit", "--run-dir", runs).exit_code == 0
    ignored = cli("run", "--resume", runs / "tiny", "--run-dir", tmp_path / "elsewhere", "--out", tmp_path / "b.cnnkit")
    assert ignored.exit_code == 1 and ignored.stderr == (f"error: --run-dir names where new run folders go; --resume goes on in the folder it names "
                                                        f"({runs / 'tiny'}): give one of them\n")
    empty = cli("run", spec_file, "-q", "--out", tmp_path / "c.cnnkit", "--run-dir", "")
    assert empty.exit_code == 1 and empty.stderr.startswith("error: --run-dir is empty; give a folder, e.g. --run-dir runs")
    monkeypatch.chdir(tmp_path)  # CNNKIT_RUN_DIR='' is unset, as for every CNNKIT_* variable: runs/ under the current folder
    unset = cli("run", spec_file, "-q", "--out", tmp_path / "d.cnnkit", env={"CNNKIT_RUN_DIR": ""})
    assert unset.exit_code == 0, unset.output
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny-2"] and not (tmp_path / "tiny").exists()
    # a resume with CNNKIT_RUN_DIR set (a standing choice for new runs) is fine
    again = cli("run", "--resume", runs / "tiny", "-q", "--out", tmp_path / "e.cnnkit", env={"CNNKIT_RUN_DIR": str(tmp_path / "elsewhere")})
    assert again.exit_code == 0, again.output


def test_the_size_estimate_of_a_bundle_is_close_to_its_size():
    """The free-space check before training asked for 1.1 MB for the seed spec's 53 KB bundle."""
    from cnnkit.spec import load_spec, parameter_count

    spec = load_spec(SEED_SPEC)
    model = cnnkit.build(spec)
    rows = [{"epoch": e, "train_loss": 0.1234567, "test_accuracy": 0.9123, "test_macro_f1": 0.9101, "lr": 0.01} for e in range(1, spec.train.epochs + 1)]
    model.metadata = {"cnnkit_version": "0.1.0", "seed": 0, "dataset": "fashion-mnist", "train_examples": 60000, "test_examples": 10000,
                      "history": rows, "metrics": {"test_accuracy": 0.9123, "test_macro_f1": 0.9101}}
    actual = len(bundle.encode(model))
    estimate = bundle.estimated_size(sum(parameter_count(spec.layers)), spec)
    assert actual <= estimate <= 1.25 * actual, (actual, estimate)


def test_a_checkpoint_file_is_recognised_by_its_first_bytes(tmp_path, spec_file):
    result = train_session(spec_file, out=str(tmp_path / "m.cnnkit"), run_dir=tmp_path / "runs", say=lambda m: None)
    assert bundle.is_checkpoint_file(result.folder / "last.cnnkit")
    assert not bundle.is_checkpoint_file(result.target) and bundle.is_bundle_file(result.target)
    assert not bundle.is_checkpoint_file(result.folder / "spec.json") and not bundle.is_checkpoint_file(tmp_path / "missing")
