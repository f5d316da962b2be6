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
