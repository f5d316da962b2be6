"""`cnnkit run --backend torch`: the same training as the NumPy loop (order, optimizer, schedule, label
smoothing, clipping), real torchrun runs with DistributedDataParallel, and one-line errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.data.fashion_mnist import Dataset
from cnnkit.errors import CnnkitError

from conftest import REAL_DATA, TINY_SPEC, synthetic_images
from fakeplugins import CNNKIT, subprocess_env

torch = pytest.importorskip("torch")

from cnnkit.backends.torch import fit_torch  # noqa: E402
from cnnkit.data import load_fashion_mnist  # noqa: E402
from cnnkit.torch import to_module  # noqa: E402

pytestmark = pytest.mark.torch
SPECS = Path(__file__).resolve().parent.parent / "specs"


def tiny_data(train=240, test=100) -> Dataset:
    tr, trl = synthetic_images(train, 1)
    te, tel = synthetic_images(test, 2)
    return Dataset(tr, trl.astype(np.int64), te, tel.astype(np.int64), [str(i) for i in range(10)], "synthetic")


@pytest.mark.parametrize("optimizer, extra", [
    ({"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, {"schedule": {"type": "cosine"}, "label_smoothing": 0.1}),
    ({"type": "adamw", "lr": 0.003}, {"schedule": {"type": "onecycle", "max_lr": 0.01}, "clip_grad_norm": 0.5}),
    ({"type": "adam", "lr": 0.002}, {}),
])
def test_torch_training_equals_the_numpy_loop(optimizer, extra):
    spec = copy.deepcopy(TINY_SPEC)
    spec["train"].update(epochs=2, batch_size=32, optimizer=optimizer, **extra)
    data = tiny_data()
    numpy_model = cnnkit.train(spec, data)
    numpy_history = numpy_model.metadata["history"]
    torch_model = cnnkit.build(spec)  # the same initial weights, drawn by cnnkit from the seed
    torch_history = fit_torch(torch_model, data)
    for name in numpy_model.weights:
        np.testing.assert_allclose(torch_model.weights[name], numpy_model.weights[name], rtol=0, atol=2e-4, err_msg=name)
    for ours, theirs in zip(torch_history, numpy_history):
        assert ours.train_loss == pytest.approx(theirs["train_loss"], abs=1e-4)
        assert ours.lr == pytest.approx(theirs["lr"], rel=1e-6)
    assert len(torch_history) == 2


def test_devices_that_are_not_there_and_bad_settings_fail_in_one_line(tmp_path):
    spec_path = tmp_path / "s.json"
    spec_path.write_text(json.dumps(TINY_SPEC))
    env = subprocess_env()
    for args, message in (
        (("--backend", "torch", "--device", "cuda"), "error: --device cuda: no CUDA device is available here"),
        (("--backend", "torch", "--device", "tpu"), "error: --device must be one of cpu, cuda, mps. Received: 'tpu'"),
        (("--backend", "jax"), "error: --backend must be numpy or torch. Received: 'jax'"),
        (("--device", "cuda"), "error: --device cuda needs --backend torch"),
        (("--backend", "torch", "--strict"), "error: --strict works with the NumPy backend only"),  # was ignored: a useless model was written
    ):
        result = subprocess.run([*CNNKIT, "run", str(spec_path), "--out", str(tmp_path / "m.cnnkit"), *args], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]



def test_global_batch_smaller_than_the_process_count_is_refused(monkeypatch):
    model = cnnkit.build({**TINY_SPEC, "train": {**TINY_SPEC["train"], "batch_size": 1}})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(CnnkitError, match="train.batch_size 1 is the global batch: it must be at least the number of processes"):
        fit_torch(model, tiny_data())


def torchrun(nproc: int, spec_path, out, tmp_path) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"  # torchrun's own default with several processes; one process too, for a fair pair
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "cnnkit", "run", str(spec_path), "--backend", "torch", "--out", str(out)]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_torchrun_two_processes_match_one_process_on_real_fashion_mnist(tmp_path):
    spec = json.loads((SPECS / "fashion_mnist_fast.json").read_text())
    spec["data"].update(dir=str(REAL_DATA), train_limit=3000, test_limit=2000)
    spec["train"].update(epochs=1, batch_size=31, optimizer={"type": "adam", "lr": 0.003})  # odd: ranks take 15 and 16
    spec_path = tmp_path / "fast.json"
    spec_path.write_text(json.dumps(spec))
    results = {}
    for nproc in (2, 1):
        out = tmp_path / f"ddp{nproc}.cnnkit"
        result = torchrun(nproc, spec_path, out, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
        model = cnnkit.load(out)  # the NumPy runtime loads what torch trained
        assert model.metadata["backend"]["processes"] == nproc
        data = load_fashion_mnist(REAL_DATA, train_limit=1, test_limit=2000)
        proba = model.predict_proba(data.test_images)
        module = to_module(model)
        with torch.no_grad():
            torch_proba = module(torch.from_numpy(model.preprocess(data.test_images))).numpy()
        np.testing.assert_allclose(proba, torch_proba, rtol=0, atol=1e-5)
        accuracy = float((proba.argmax(1) == data.test_labels).mean())
        assert accuracy == pytest.approx(model.metadata["metrics"]["test_accuracy"], abs=1e-12)
        results[nproc] = (accuracy, model.weights)
    # Same global batch, same order, gradients averaged exactly: the runs differ only in float
    # summation order (a 3-step run agrees within 5e-8), which ~100 Adam steps amplify to ~1e-3 in
    # the weights. Tolerances: 0.01 test accuracy, 5e-3 per weight.
    assert abs(results[2][0] - results[1][0]) <= 0.01, results
    assert results[1][0] > 0.7
    for name, w in results[1][1].items():
        np.testing.assert_allclose(results[2][1][name], w, rtol=0, atol=5e-3, err_msg=name)
