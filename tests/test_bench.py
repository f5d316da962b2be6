"""tools/bench.py: the PyTorch twin it builds from a spec computes what cnnkit computes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import cnnkit

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("cnnkit_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.torch
@pytest.mark.parametrize("layers", [
    None,  # every architecture the benchmark measures
    [{"type": "conv2d", "filters": 3, "kernel_size": 4, "padding": "same"}, {"type": "relu"},  # asymmetric padding
     {"type": "conv2d", "filters": 2, "kernel_size": 3, "stride": 2, "use_bias": False}, {"type": "maxpool2d", "pool_size": 3, "stride": 2},
     {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}],
])
def test_the_torch_twin_gives_cnnkits_logits(layers):
    torch = pytest.importorskip("torch")
    bench = load_bench()
    specs = list(bench.ARCHITECTURES.values()) if layers is None else [{"name": "twin", "input": {"shape": [1, 28, 28]}, "layers": layers}]
    x = np.random.default_rng(0).normal(size=(5, 1, 28, 28)).astype(np.float32)
    for spec in specs:
        model = cnnkit.build(spec)
        logits, _ = model.forward(x, train=False, logits=True)
        with torch.no_grad():
            twin = bench.torch_net(model).eval()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(twin, logits, rtol=1e-4, atol=1e-5)


def test_the_machine_report_names_cpu_caches_blas_and_picks():
    report = load_bench().machine()
    assert report["cpu_model"] and report["numpy"] == np.__version__
    assert report["tuning"]["block_bytes"] > 0 and "seed.0" in report["tuning"]["conv_strategies"]


# The best spec's shape of net, small enough to profile in a second.
BN_NET = {"name": "bn", "input": {"shape": [1, 8, 8]}, "layers": [
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False}, {"type": "batchnorm2d"},
    {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}]}


@pytest.mark.torch
def test_the_profile_times_every_step_in_both_frameworks(monkeypatch):
    pytest.importorskip("torch")
    bench = load_bench()
    profile = bench.sibling("bench_profile")
    monkeypatch.setattr(profile, "IMAGES", 4)
    tables = profile.profile(BN_NET, rounds=1)
    # Training runs batch norm -> relu -> pool as one step; inference folds batch norm into the conv.
    assert [r["step"] for r in tables["train"]] == ["0 conv2d", "1-3 batchnorm2d+relu+maxpool2d", "4 flatten", "5 dense"]
    assert [r["step"] for r in tables["infer"]] == ["0-1 conv2d+batchnorm2d", "2-3 relu+maxpool2d", "4 flatten", "5 dense"]
    for row in tables["train"]:
        assert {k for k in row if k.endswith("_ms")} == {"cnnkit_forward_ms", "cnnkit_backward_ms", "pytorch_forward_ms", "pytorch_backward_ms"}
        assert all(row[k] >= 0 for k in row if k.endswith("_ms"))


@pytest.mark.onnx
def test_predict_proba_is_timed_against_onnxruntime_on_the_exported_model():
    pytest.importorskip("onnxruntime")
    infer = load_bench().sibling("bench_infer")
    model = cnnkit.build(BN_NET)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8)).astype(np.float32)
    rows = infer.predict_rates(model, pixels, threads=1, rounds=1)
    assert [r["batch"] for r in rows] == list(infer.PREDICT_BATCHES)
    assert all(r["predict_proba_images_per_s"] > 0 and r["onnxruntime_images_per_s"] > 0 for r in rows)
    # The session computes what predict_proba computes.
    got = infer.session(model, 1).run(["probabilities"], {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), atol=1e-5)
