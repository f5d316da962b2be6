"""Inference frees as it goes: peak memory of a forward pass does not grow with depth."""

from __future__ import annotations

import json
import subprocess
import sys

# Child process: the seed net's convolutions, then `depth` relu layers, predicting 100 images.
# Prints ru_maxrss (KiB on Linux) before and after the prediction.
CHILD = """
import json, resource, sys
import numpy as np
import cnnkit
depth = int(sys.argv[1])
conv = {"type": "conv2d", "filters": 6, "kernel_size": 5, "padding": "same"}
spec = {"name": "deep", "input": {"shape": [1, 28, 28]},
        "layers": [conv, {"type": "relu"}, conv, *[{"type": "relu"}] * depth,
                   {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}]}
model = cnnkit.build(spec)
images = np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8)
model.predict(images[:2])  # warm up (imports, first allocations) before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
predicted = model.predict(images)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "predicted": len(predicted)}))
"""


def peak_growth_mib(depth: int) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(depth)], capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["predicted"] == 100
    return (result["after_kib"] - result["before_kib"]) / 1024


def test_deep_inference_peak_memory_does_not_grow_with_depth():
    # Each activation of 100 images is 100 x 6 x 28 x 28 float32 = 1.8 MiB: keeping every layer's
    # input alive, as a forward pass for training must, would peak some 900 MiB higher at 500 relus.
    # Freed as it goes, the peak stays a few activations (and the convolution's blocks) high.
    assert peak_growth_mib(500) < 64
