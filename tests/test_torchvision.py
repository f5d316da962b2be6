"""The torchvision dataset source against the real Fashion-MNIST.

torchvision 0.29.1 needs the torch it was built for (2.14.1, a ~5.5 GB CUDA build), while `make test`
keeps the 1.4 GB venv with torch 2.13.0's CPU build, so these tests skip there: `make
test-torchvision` (run by CI) builds `.venv-tv` with the `[test,torchvision]` extras and runs them
there, with the PyTorch parity tests (`-m "torch or torchvision"`), on torchvision's torch. The real
files are laid out as torchvision expects them (root/FashionMNIST/raw, uncompressed IDX) and loaded
with ``torchvision.datasets.FashionMNIST(root, download=False)`` through cnnkit: the same spec trained
from the torchvision and the fashion-mnist source must give identical weights.
"""

from __future__ import annotations

import copy
import gzip

import numpy as np
import pytest

import cnnkit
from cnnkit.data import load_dataset
from cnnkit.errors import DataError
from cnnkit.spec import validate_data, validate_spec
from conftest import REAL_DATA, TINY_SPEC

pytest.importorskip("torchvision", reason="torchvision is not installed (make test-torchvision)")

pytestmark = [
    pytest.mark.torchvision,
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file(), reason="real Fashion-MNIST not installed"),
]


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # one epoch on 400 images: not what is tested
def test_torchvision_fashion_mnist_gives_the_fashion_mnist_model(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in REAL_DATA.glob("*-ubyte.gz"):
        (raw / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    spec = dict(TINY_SPEC, train={**TINY_SPEC["train"], "epochs": 1})
    limits = {"train_limit": 400, "test_limit": 100}
    a = copy.deepcopy(spec)
    a["data"] = {"dataset": "torchvision", "name": "FashionMNIST", "root": str(tmp_path / "tv"), **limits}
    b = copy.deepcopy(spec)
    b["data"] = {"dataset": "fashion-mnist", "dir": str(REAL_DATA), **limits}
    tv = load_dataset(validate_spec(a).data, (1, 28, 28))
    idx = load_dataset(validate_spec(b).data, (1, 28, 28))
    assert np.array_equal(tv.train_images, idx.train_images) and np.array_equal(tv.test_labels, idx.test_labels)
    assert tv.classes == idx.classes
    ma, mb = cnnkit.train(a), cnnkit.train(b)
    assert all(np.array_equal(ma.weights[k], mb.weights[k]) for k in ma.weights)
    assert list((tmp_path / "cache" / "cnnkit" / "torchvision").glob("FashionMNIST-*.npz"))  # converted once, cached


def test_torchvision_missing_files_are_one_line_with_the_download_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as caught:
        load_dataset(validate_data({"dataset": "torchvision", "name": "FashionMNIST", "root": str(tmp_path / "empty")}), (1, 28, 28))
    assert "set it to true" in str(caught.value) and "\n" not in str(caught.value)
