"""Run folders, checkpoints and resume: a run stopped at any step and resumed ends in the same bundle bytes."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys

import pytest

import cnnkit
from cnnkit import bundle
from cnnkit.bundle import encode, read
from cnnkit.data import load_fashion_mnist
from cnnkit.errors import BundleError, CnnkitError
from cnnkit.training.checkpoint import read_checkpoint
from cnnkit.training.health import TrainingDiverged, TrainingWarning
from cnnkit.training.loop import Interrupted
from cnnkit.training.resume import resume_run
from cnnkit.training.runfolder import BEST, HISTORY_COLUMNS, LAST, save_final, start_run, train_in_folder
from conftest import TINY_SPEC


def sgd_spec(synthetic_dir):
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["dir"] = str(synthetic_dir)
    spec["train"].update(optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.9}, schedule={"type": "step", "step_size": 10, "gamma": 0.5})
    return spec


def rich_spec(synthetic_dir):
    """Everything that carries state across steps: Adam, one-cycle, dropout, batch norm, augmentation, early stopping."""
    spec = sgd_spec(synthetic_dir)
    spec["layers"][1:1] = [{"type": "batchnorm2d"}]
    spec["layers"].insert(5, {"type": "dropout", "rate": 0.2})
    spec["data"].update(validation=0.2, augment={"crop_padding": 2, "hflip": True, "erasing": {"p": 0.5}})
    spec["train"].update(epochs=4, batch_size=32, optimizer={"type": "adam", "lr": 0.01}, schedule={"type": "onecycle", "max_lr": 0.02},
                         early_stopping={"patience": 2, "monitor": "val_accuracy"})
    return spec


def ema_spec(synthetic_dir):
    """The rich spec with a moving average of the weights (warmed up) and test-time augmentation."""
    spec = rich_spec(synthetic_dir)
    spec["train"]["ema"] = {"decay": 0.95, "warmup_power": 0.75}
    spec["predict"] = {"tta": ["hflip"]}
    return spec


def run_in_folder(spec, data, base, stop_at=None):
    """Train in a new run folder; with ``stop_at``, stop after that many optimizer steps (Interrupted)."""
    model = cnnkit.build(spec)
    model.classes = list(data.classes)
    folder = start_run(base, model.spec.name, model.spec.to_dict())
    stop = None if stop_at is None else (lambda state: state.done == stop_at)
    train_in_folder(model, data, folder, stop_requested=stop)
    return model, folder


def resume_to_end(folder, data):
    model, state = resume_run(folder)
    train_in_folder(model, data, folder, state=state)
    return model


@pytest.mark.parametrize("make_spec,stops", [(sgd_spec, [1, 7, 15, 16, 44]), (rich_spec, [1, 4, 6, 7, 15]), (ema_spec, [1, 6, 7, 15])],
                         ids=["sgd", "rich", "ema"])
def test_stopped_and_resumed_runs_end_in_the_same_bytes(make_spec, stops, synthetic_dir, tmp_path):
    import warnings

    spec = make_spec(synthetic_dir)
    data = load_fashion_mnist(synthetic_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        expected = encode(cnnkit.train(spec, data))
        model, folder = run_in_folder(spec, data, tmp_path / "runs")
        assert encode(model) == expected  # the folder's hooks change nothing
        for k in stops:  # first step, mid-epoch, an epoch's last step, the next epoch's first, later (several times over)
            with pytest.raises(Interrupted, match=f"--resume {tmp_path / 'runs'}"):
                run_in_folder(spec, data, tmp_path / "runs", stop_at=k)
            folder = sorted((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1]
            stopped, _ = read_checkpoint(folder / LAST)
            assert stopped.predict(data.test_images[:4]).shape == (4,)  # a checkpoint is a usable bundle
            assert encode(resume_to_end(folder, data)) == expected, f"stopped after step {k}"


def test_stop_twice_then_resume(synthetic_dir, tmp_path):
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    model, _ = run_in_folder(spec, data, tmp_path / "whole")
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=5)
    folder = tmp_path / "runs" / "tiny"
    model2, state = resume_run(folder)
    with pytest.raises(Interrupted, match="epoch 2, step 5 of 15"):
        train_in_folder(model2, data, folder, state=state, stop_requested=lambda s: s.done == 20)
    assert encode(resume_to_end(folder, data)) == encode(model)


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_split_batches_resume_to_the_same_bytes(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    spec = rich_spec(synthetic_dir)
    spec["train"]["batch_size"] = 96  # big enough that the model splits it across the two threads
    data = load_fashion_mnist(synthetic_dir)
    model, _ = run_in_folder(spec, data, tmp_path / "whole")
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=3)
    assert encode(resume_to_end(tmp_path / "runs" / "tiny", data)) == encode(model)


def test_run_folder_contents_and_numbering(synthetic_dir, tmp_path):
    spec, data = rich_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    run_in_folder(spec, data, tmp_path / "runs")
    model, folder = run_in_folder(spec, data, tmp_path / "runs")
    assert folder.name == "tiny-2" and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([BEST, LAST, "history.csv", "spec.json"])
    assert json.loads((folder / "spec.json").read_text()) == model.spec.to_dict()
    rows = list(csv.DictReader((folder / "history.csv").open()))
    assert tuple(rows[0]) == HISTORY_COLUMNS and len(rows) == len(model.metadata["history"])
    for row, kept in zip(rows, model.metadata["history"]):
        assert float(row["train_loss"]) == pytest.approx(kept["train_loss"], rel=1e-5)
        assert float(row["val_macro_f1"]) == pytest.approx(kept["val_macro_f1"], rel=1e-5)
        assert float(row["images_per_second"]) > 0 and row["test_accuracy"] == ""
    best = cnnkit.load(folder / BEST)
    assert best.metadata["history"][-1]["epoch"] == model.metadata["validation"]["best_epoch"]
    assert read(folder / LAST).version == (1, 2) and read(folder / BEST).version == (1, 1)  # a checkpoint, a plain bundle


def test_a_plain_bundle_is_not_a_checkpoint(synthetic_dir, tmp_path):
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    _, folder = run_in_folder(spec, data, tmp_path / "runs")
    with pytest.raises(BundleError, match=r"refusing to overwrite .*last\.cnnkit: it is the checkpoint of the run in .*--force replaces it"):
        cnnkit.save(cnnkit.load(folder / LAST), folder / LAST)  # a checkpoint is at least as valuable as a bundle
    bundle.save(cnnkit.load(folder / LAST), folder / LAST, force=True)
    with pytest.raises(BundleError, match="not a checkpoint"):
        resume_run(folder)
    with pytest.raises(CnnkitError, match="not a run folder"):
        resume_run(tmp_path / "nowhere")


def test_resume_may_change_training_settings_only(synthetic_dir, tmp_path):
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=20)
    folder = tmp_path / "runs" / "tiny"
    model, state = resume_run(folder, ["train.optimizer.lr=0.01", "train.epochs=4"])
    assert model.spec.train.optimizer.lr == 0.01 and state.done == 20 and state.epoch == 2
    train_in_folder(model, data, folder, state=state)
    assert [r["epoch"] for r in model.metadata["history"]] == [1, 2, 3, 4]
    with pytest.raises(CnnkitError, match="outside train"):
        resume_run(folder, ["layers[4].units=10", "data.train_limit=100"])


def test_resume_trains_with_the_optimizer_settings_it_was_given(synthetic_dir, tmp_path):
    """--set train.optimizer.momentum on resume is what training uses (the checkpoint's working
    copy of the old momentum used to win, while the bundle's spec showed the new one)."""
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=20)
    model, state = resume_run(tmp_path / "runs" / "tiny", ["train.optimizer.momentum=0.5", "train.optimizer.lr=0.01"])
    assert model.spec.train.optimizer.momentum == 0.5 and state.optimizer.momentum == 0.5
    assert state.optimizer.velocity  # the per-weight state still comes from the checkpoint


def test_resume_with_set_rewrites_spec_json_and_names_a_checkpoint_file_given_as_folder(synthetic_dir, tmp_path):
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=20)
    folder = tmp_path / "runs" / "tiny"
    with pytest.raises(CnnkitError, match=f"cannot resume {folder / LAST}: it is a file; give its run folder, {folder}"):
        resume_run(folder / LAST)
    with pytest.raises(CnnkitError, match="train.epochs=1"):  # refused: spec.json keeps what the run trains under
        resume_run(folder, ["train.epochs=1"])
    assert json.loads((folder / "spec.json").read_text())["train"]["epochs"] == 3
    resume_run(folder, ["train.epochs=5"])
    assert json.loads((folder / "spec.json").read_text())["train"]["epochs"] == 5


def test_resume_refuses_to_change_how_the_best_epoch_is_tracked(synthetic_dir, tmp_path):
    spec, data = rich_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    spec["train"]["restore_best"] = False
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=5)
    folder = tmp_path / "runs" / "tiny"
    for change in ("train.restore_best=true", "train.early_stopping.monitor=val_loss"):
        with pytest.raises(CnnkitError, match="cannot resume .* another train.restore_best or train.early_stopping.monitor"):
            resume_run(folder, [change])
    model, state = resume_run(folder, ["train.early_stopping.patience=3"])  # other early-stopping settings may change
    assert model.spec.train.early_stopping.patience == 3


def test_divergence_keeps_the_last_checkpoint_and_says_how_to_resume(synthetic_dir, tmp_path, monkeypatch):
    from cnnkit.training.steppers import numpy as loop  # the NumPy stepper computes the loss

    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    original = loop.softmax_cross_entropy
    calls = []

    def poisoned(logits, labels, smoothing=0.0):  # the 20th step's loss is NaN
        calls.append(1)
        loss, grad = original(logits, labels, smoothing)
        return (float("nan") if len(calls) == 20 else loss), grad

    monkeypatch.setattr(loop, "softmax_cross_entropy", poisoned)
    folder = tmp_path / "runs" / "tiny"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 5 of 15.*last good checkpoint .*last\.cnnkit stays.*--resume .*train\.optimizer\.lr="):
        run_in_folder(spec, data, tmp_path / "runs")
    model, state = resume_run(folder)
    assert (state.epoch, state.step, state.done) == (2, 0, 15)


def test_disk_full_at_the_end_names_the_intact_checkpoint(synthetic_dir, tmp_path, monkeypatch):
    from cnnkit import bundle

    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    model, folder = run_in_folder(spec, data, tmp_path / "runs")
    before = (folder / LAST).read_bytes()

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle, "write_atomic", full)
    with pytest.raises(BundleError, match=r"No space left on device; the run's last checkpoint .*last\.cnnkit is intact.*--resume"):
        save_final(model, tmp_path / "model.cnnkit", folder)
    assert (folder / LAST).read_bytes() == before and not (tmp_path / "model.cnnkit").exists()
    monkeypatch.undo()
    resumed, state = resume_run(folder)  # a finished run: resuming only writes the bundle
    train_in_folder(resumed, data, folder, state=state)
    assert encode(resumed) == encode(model)


def test_resume_refuses_an_optimizer_that_does_not_fit(synthetic_dir, tmp_path):
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=3)
    with pytest.raises(BundleError, match=r"checkpoint\.optimizer\.type is 'sgd', but the spec's optimizer is 'adam'"):
        resume_run(tmp_path / "runs" / "tiny", ['train.optimizer={"type": "adam"}'])


def test_a_run_dir_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CnnkitError, match=r"notes\.txt: it is a file, not a folder \(--run-dir, CNNKIT_RUN_DIR\)"):
        start_run(tmp_path / "notes.txt", "tiny", {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_divergence_without_a_checkpoint_gives_its_advice_once(synthetic_dir, tmp_path, monkeypatch):
    """At the first step the loss is not the rate's fault; the run folder's suffix added 'lower train.optimizer.lr' anyway."""
    from cnnkit.training.steppers import numpy as loop  # the NumPy stepper computes the loss

    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    original = loop.softmax_cross_entropy

    def poisoned(logits, labels, smoothing=0.0):
        loss, grad = original(logits, labels, smoothing)
        return float("nan"), grad

    monkeypatch.setattr(loop, "softmax_cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged) as caught:
        run_in_folder(spec, data, tmp_path / "runs")
    message = str(caught.value)
    assert "before any weight update; check input.preprocess" in message
    assert message.endswith("no epoch finished, so there is no checkpoint") and "lower train.optimizer.lr" not in message, message


def test_resume_refuses_fewer_epochs_than_the_run_has_trained(synthetic_dir, tmp_path):
    """train.epochs=1 on a run with 2 finished epochs wrote a bundle whose spec says 1 epoch and whose history has 2."""
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=20)  # 15 steps an epoch: stopped 5 steps into epoch 2
    folder = tmp_path / "runs" / "tiny"
    with pytest.raises(CnnkitError, match=r"train\.epochs=1: the run has trained into epoch 2 already"):
        resume_run(folder, ["train.epochs=1"])
    model, state = resume_run(folder, ["train.epochs=2"])
    assert state.epoch == 2


def test_reading_a_fifo_as_checkpoint_is_one_error_not_a_hang(tmp_path):
    # read_checkpoint read with a plain read_bytes(); a FIFO blocked it forever. It now reads like
    # bundle.read (files.read_regular). In a subprocess, so the old behaviour fails by timeout, not a hang.
    fifo = tmp_path / "last.cnnkit"
    os.mkfifo(fifo)
    code = f"from cnnkit.training.checkpoint import read_checkpoint\ntry:\n    read_checkpoint({str(fifo)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("BundleError") and "FIFO" in result.stdout, result
