"""The torchvision source against the real Fashion-MNIST, run in the separate venv `make tv-venv` builds.

torchvision 0.29.1 needs torch 2.14.1 (a ~5.5 GB CUDA build), while the test venv pins torch
2.13.0+cpu for the parity tests, so they cannot share a venv. These tests run a script in
``.venv-tv`` (or $CNNKIT_TV_PYTHON) and skip when it is absent. The script lays the real files out
as torchvision expects (root/FashionMNIST/raw, uncompressed IDX), loads them with
``torchvision.datasets.FashionMNIST(root, download=False)`` through cnnkit, and trains the same
spec from the torchvision and the fashion-mnist source: the weights must be identical.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REAL_DATA

ROOT = Path(__file__).resolve().parent.parent
TV_PYTHON = Path(os.environ.get("CNNKIT_TV_PYTHON", ROOT / ".venv-tv" / "bin" / "python"))

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not TV_PYTHON.is_file(), reason="no torchvision venv (make tv-venv)"),
    pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file(), reason="real Fashion-MNIST not installed"),
]

SCRIPT = r'''
import copy, json, sys
import numpy as np
import cnnkit
from cnnkit.data import load_dataset
from cnnkit.spec import validate_spec

root, real, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
limits = {"train_limit": 400, "test_limit": 100}
a = copy.deepcopy(spec); a["data"] = {"dataset": "torchvision", "name": "FashionMNIST", "root": root, **limits}
b = copy.deepcopy(spec); b["data"] = {"dataset": "fashion-mnist", "dir": real, **limits}
tv = load_dataset(validate_spec(a).data, (1, 28, 28))
idx = load_dataset(validate_spec(b).data, (1, 28, 28))
assert np.array_equal(tv.train_images, idx.train_images) and np.array_equal(tv.test_labels, idx.test_labels)
assert tv.classes == idx.classes, (tv.classes, idx.classes)
ma, mb = cnnkit.train(a), cnnkit.train(b)
assert all(np.array_equal(ma.weights[k], mb.weights[k]) for k in ma.weights)
print("same", ma.metadata["metrics"]["test_accuracy"])
'''


def test_torchvision_fashion_mnist_gives_the_fashion_mnist_model(tmp_path):
    import json

    from conftest import TINY_SPEC

    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in REAL_DATA.glob("*-ubyte.gz"):
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    spec = dict(TINY_SPEC, train={**TINY_SPEC["train"], "epochs": 1})
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "CNNKIT_OFFLINE": "1"}
    result = subprocess.run([str(TV_PYTHON), "-c", SCRIPT, str(tmp_path / "tv"), str(REAL_DATA), json.dumps(spec)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and result.stdout.startswith("same"), result.stderr[-2000:]
    assert list((tmp_path / "cache" / "cnnkit" / "torchvision").glob("FashionMNIST-*.npz"))  # converted once, cached


def test_torchvision_missing_files_are_one_line_with_the_download_hint(tmp_path):
    script = ("from cnnkit.data import load_dataset; from cnnkit.spec import validate_data; from cnnkit.errors import DataError\n"
              "try:\n    load_dataset(validate_data({'dataset': 'torchvision', 'name': 'FashionMNIST', 'root': r'%s'}), (1, 28, 28))\n"
              "except DataError as e:\n    print(e)\n") % (tmp_path / "empty")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([str(TV_PYTHON), "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "set it to true" in result.stdout and "\n" not in result.stdout.strip(), result.stdout + result.stderr[-1000:]
