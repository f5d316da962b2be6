"""`--backend torch` inside the one training loop: a run folder, checkpoints that resume to the same
bytes, Ctrl-C and --resume in a real process, and torchrun saving batch norm's running statistics
averaged over the processes (issue 20)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cnnkit
from cnnkit.bundle import encode
from cnnkit.data import load_fashion_mnist
from cnnkit.training.checkpoint import read_checkpoint
from cnnkit.training.loop import Interrupted, fresh_optimizer
from cnnkit.training.resume import resume_run
from cnnkit.training.runfolder import LAST, start_run, train_in_folder
from conftest import TINY_SPEC
from fakeplugins import CNNKIT, subprocess_env
from test_runs import ema_spec, rich_spec, sgd_spec

torch = pytest.importorskip("torch")

from cnnkit.training.steppers.torch import TorchStepper  # noqa: E402

pytestmark = pytest.mark.torch


def run_in_folder(spec, data, base, stop_at=None):
    model = cnnkit.build(spec)
    model.classes = list(data.classes)
    folder = start_run(base, model.spec.name, model.spec.to_dict())
    stop = None if stop_at is None else (lambda state: state.done == stop_at)
    train_in_folder(model, data, folder, stop_requested=stop, stepper=TorchStepper())
    return model, folder


@pytest.mark.filterwarnings("ignore::cnnkit.training.health.TrainingWarning")
@pytest.mark.parametrize("make_spec, stops", [(sgd_spec, [1, 15, 16]), (rich_spec, [4, 7]), (ema_spec, [4, 7])], ids=["sgd-momentum", "rich", "ema"])
def test_torch_runs_stopped_and_resumed_end_in_the_same_bytes(make_spec, stops, synthetic_dir, tmp_path):
    """The checkpoint holds torch's optimizer state (Adam's moments and step, SGD's momentum
    buffers, in cnnkit's layouts), batch norm's running statistics, and the position; dropout's
    masks are drawn per step: a stopped torch run resumes to the bytes of an uninterrupted one.
    The rich spec: Adam, one-cycle, batch norm, dropout, augmentation, validation, early stopping;
    the ema spec adds the moving average of the weights (kept in torch, in the checkpoint in cnnkit's layouts)."""
    spec, data = make_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    whole, _ = run_in_folder(spec, data, tmp_path / "whole")
    expected = encode(whole)
    assert whole.metadata["backend"]["name"] == "torch"
    for k in stops:
        with pytest.raises(Interrupted, match=f"--resume {tmp_path / f'runs{k}'}"):
            run_in_folder(spec, data, tmp_path / f"runs{k}", stop_at=k)
        folder = tmp_path / f"runs{k}" / "tiny"
        model, state = resume_run(folder)
        assert state.done == k and state.optimizer.params.type == spec["train"]["optimizer"]["type"]
        train_in_folder(model, data, folder, state=state, stepper=TorchStepper())
        assert encode(model) == expected, f"stopped after step {k}"
    # The optimizer state matters: resumed without it, the run ends elsewhere.
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "control", stop_at=stops[-1])
    folder = tmp_path / "control" / "tiny"
    model, state = resume_run(folder)
    state.optimizer = fresh_optimizer(model)
    train_in_folder(model, data, folder, state=state, stepper=TorchStepper())
    assert encode(model) != expected


def test_a_numpy_checkpoint_goes_on_with_torch(synthetic_dir, tmp_path):
    """A checkpoint is the same whichever engine wrote it: a NumPy run stopped mid-epoch goes on
    with PyTorch, ending within float noise of the NumPy run (SGD with momentum)."""
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    spec["train"]["epochs"] = 2
    whole = cnnkit.build(spec)
    whole.classes = list(data.classes)
    folder = start_run(tmp_path / "whole", "tiny", whole.spec.to_dict())
    train_in_folder(whole, data, folder)
    model = cnnkit.build(spec)
    model.classes = list(data.classes)
    folder = start_run(tmp_path / "runs", "tiny", model.spec.to_dict())
    with pytest.raises(Interrupted):
        train_in_folder(model, data, folder, stop_requested=lambda state: state.done == 20)
    model, state = resume_run(folder)
    assert any(v.any() for v in state.optimizer.velocity.values())
    train_in_folder(model, data, folder, state=state, stepper=TorchStepper())
    for name in whole.weights:
        np.testing.assert_allclose(model.weights[name], whole.weights[name], rtol=0, atol=2e-4, err_msg=name)
    assert model.metadata["backend"]["name"] == "torch" and [r["epoch"] for r in model.metadata["history"]] == [1, 2]


@pytest.mark.filterwarnings("ignore::cnnkit.training.health.TrainingWarning")
def test_the_moving_average_crosses_engines(synthetic_dir, tmp_path):
    """A NumPy run with train.ema stopped mid-epoch goes on with PyTorch: the checkpoint's average
    (cnnkit layouts) goes into torch, is updated there at every step and comes back; the run ends within
    float noise of the NumPy run, the average being what the model keeps."""
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    spec["layers"][1:1] = [{"type": "batchnorm2d"}]  # running statistics are averaged too
    spec["train"].update(epochs=2, ema={"decay": 0.9, "warmup_power": 1.0})
    whole = cnnkit.build(spec)
    whole.classes = list(data.classes)
    train_in_folder(whole, data, start_run(tmp_path / "whole", "tiny", whole.spec.to_dict()))
    model = cnnkit.build(spec)
    model.classes = list(data.classes)
    folder = start_run(tmp_path / "runs", "tiny", model.spec.to_dict())
    with pytest.raises(Interrupted):
        train_in_folder(model, data, folder, stop_requested=lambda state: state.done == 20)
    model, state = resume_run(folder)
    assert state.ema.updates == 20
    trained = {k: w.copy() for k, w in model.weights.items()}
    train_in_folder(model, data, folder, state=state, stepper=TorchStepper())
    for name in whole.weights:
        np.testing.assert_allclose(model.weights[name], whole.weights[name], rtol=0, atol=2e-4, err_msg=name)
    assert state.ema.updates == 30 and all(np.array_equal(model.weights[k], w) for k, w in state.ema.weights.items())
    assert not np.allclose(state.ema.weights["0.kernel"], trained["0.kernel"])


def test_cli_torch_run_folder_ctrl_c_and_resume(spec_file, tmp_path):
    """`cnnkit run --backend torch` writes a run folder with checkpoints; Ctrl-C (a real SIGINT)
    stops at a step with the resume command; --resume with --backend torch finishes to the bytes
    of an uninterrupted run of the same length."""
    runs, out = tmp_path / "runs", tmp_path / "m.cnnkit"
    env = {**subprocess_env(), "CNNKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [*CNNKIT, "run", str(spec_file), "--backend", "torch", "--set", "train.epochs=400", "--out", str(out), "--run-dir", str(runs)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = runs / "tiny" / LAST
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first epoch's checkpoint: training is under way
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, (stdout, stderr)
    assert stdout.startswith(f"training tiny with PyTorch on cpu on 240 images from ") and f"run folder {runs / 'tiny'}" in stdout.splitlines()[0]
    # The signal lands inside an epoch's steps or, epochs being short here, while an epoch is scored.
    match = re.fullmatch(r"error: training stopped at epoch (\d+)(?:, step (\d+) of 15| after its 15 steps, while scoring it); "
                         r"checkpoint (.+); go on with: cnnkit run --resume (.+)\n", stderr)
    assert match and match[3] == str(last) and match[4] == f"{runs / 'tiny'} --out {out}", stderr
    model, saved = read_checkpoint(last)
    assert saved["epoch"] == int(match[1]) and (match[2] is None or saved["step"] == int(match[2]))
    assert model.metadata["backend"]["name"] == "torch"
    epochs = int(match[1])
    resumed = subprocess.run([*CNNKIT, "run", "--resume", str(runs / "tiny"), "--backend", "torch", "--out", str(out),
                              "--set", f"train.epochs={epochs}", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([*CNNKIT, "run", str(spec_file), "--backend", "torch", "--set", f"train.epochs={epochs}", "--out",
                            str(tmp_path / "whole.cnnkit"), "--run-dir", str(tmp_path / "whole"), "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert out.read_bytes() == (tmp_path / "whole.cnnkit").read_bytes()
    assert (runs / "tiny" / "history.csv").read_text().count("\n") == epochs + 1


def torchrun(nproc: int, *args, cwd) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"  # torchrun's own default with several processes; one process too, for a fair pair
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "cnnkit", "run", *map(str, args)]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def running_statistics(x: np.ndarray, order: np.ndarray, batch: int, ranks: int, momentum: float = 0.1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each rank's running (mean, var) of batch norm on the input ``x`` (N, C, H, W) after one epoch of
    ``order``, as torch's BatchNorm2d keeps them: an exponential average of the share's mean and unbiased variance."""
    kept = []
    for rank in range(ranks):
        mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            share = x[idx[len(idx) * rank // ranks : len(idx) * (rank + 1) // ranks]].astype(np.float64)
            values = share.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
            mean = (1 - momentum) * mean + momentum * values.mean(axis=1)
            var = (1 - momentum) * var + momentum * values.var(axis=1, ddof=1)
        kept.append((mean, var))
    return kept


@pytest.mark.slow
def test_torchrun_saves_batch_norm_statistics_averaged_over_the_processes(synthetic_dir, tmp_path):
    """Plain DDP broadcasts rank 0's buffers at every step, so the bundle held rank 0's running
    statistics alone. Batch norm sits first here, on the input, so its statistics depend on the
    data only and can be computed here for each rank: the bundle holds their mean."""
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["dir"] = str(synthetic_dir)
    spec["layers"].insert(0, {"type": "batchnorm2d"})
    spec["train"].update(epochs=1, batch_size=32)
    (tmp_path / "bn.json").write_text(json.dumps(spec))
    result = torchrun(2, tmp_path / "bn.json", "--backend", "torch", "--out", tmp_path / "ddp.cnnkit", "--run-dir", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1 and "(2 processes)" in result.stdout  # rank 0 alone speaks and writes
    model = cnnkit.load(tmp_path / "ddp.cnnkit")
    assert model.metadata["backend"]["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"] and (tmp_path / "runs" / "tiny" / LAST).is_file()
    data = load_fashion_mnist(synthetic_dir)
    x = model.preprocess(data.train_images)
    order = np.random.default_rng(spec["train"]["seed"]).permutation(len(x))
    ranks = running_statistics(x, order, 32, 2)
    averaged = [np.mean([r[k] for r in ranks], axis=0) for k in (0, 1)]
    saved = model.weights["0.running_mean"], model.weights["0.running_var"]
    for got, want, rank0 in zip(saved, averaged, ranks[0]):
        # Measured: within 1e-7 of the mean (float32), while rank 0's own are 1.5e-4 (mean) and 1.9e-5 (variance) away.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert np.abs(rank0 - want).max() > 1e-5
