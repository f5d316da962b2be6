"""Shared fixtures: tiny IDX files written on the fly, a learnable synthetic dataset, a tiny spec.

Every test runs with downloads off and a private cache, so nothing reaches the network or the
user's real cache; the real Fashion-MNIST is only read by tests marked ``realdata``.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data.fashion_mnist import FILES
from cnnkit.data.idx import IDX_DTYPES

_CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX: two zero bytes, type code, ndim, big-endian uint32 dims, big-endian data."""
    array = np.asarray(array)
    code = _CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in .gz."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 28, 28) images whose class k is a bright 7x7 square at its own place, over noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 4)
        images[i, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 220
    return images, labels.astype(np.uint8)


def write_dataset(folder: Path, train: int = 240, test: int = 100, gz: bool = True) -> Path:
    """The four Fashion-MNIST file names in ``folder``, holding synthetic data (train .gz, test raw by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(("train_images", "train_labels"), synthetic_images(train, 1)))
    arrays.update(zip(("test_images", "test_labels"), synthetic_images(test, 2)))
    for key, (stem, _) in FILES.items():
        name = stem + ".gz" if gz and key.startswith("train") else stem
        write_idx(folder / name, arrays[key])
    return folder


def one_line_error(result, *fragments, code=1) -> str:
    """A CliRunner result that failed with exit ``code`` and one "error: " line on stderr holding every
    fragment (no traceback, no "internal error"); returns the line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


TINY_SPEC = {
    "name": "tiny",
    "input": {"shape": [1, 28, 28]},
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": "valid"},
        {"type": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
    "data": {"dataset": "fashion-mnist"},
    "train": {"epochs": 3, "batch_size": 16, "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 0},
}


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch, tmp_path_factory):
    """No downloads, no $CNNKIT_DATA from the caller, a throwaway per-user cache, run folders in the temp dir."""
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    monkeypatch.setenv("CNNKIT_RUN_DIR", str(tmp_path_factory.getbasetemp() / "runs"))
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.delenv("CNNKIT_FASHION_MNIST_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A folder with a small learnable dataset under the official file names (not the official data)."""
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "fmnist")


@pytest.fixture
def tiny_spec(synthetic_dir) -> dict:
    """A deep copy of TINY_SPEC reading the synthetic dataset."""
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["dir"] = str(synthetic_dir)
    return spec


@pytest.fixture
def spec_file(tmp_path, tiny_spec) -> Path:
    """tiny_spec written to tmp_path/tiny.json."""
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_spec))
    return tmp_path / "tiny.json"


@pytest.fixture
def run_all_calls(monkeypatch) -> list[int]:
    """How many tasks each call of parallel.run_all got (the model calls it once per forward and once per backprop)."""
    from cnnkit.runtime import parallel

    calls: list[int] = []
    real = parallel.run_all

    def spy(tasks):
        calls.append(len(tasks))
        return real(tasks)

    monkeypatch.setattr(parallel, "run_all", spy)
    return calls


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A sys.path entry for fake distributions; the registry's class cache starts empty."""
    import sys

    from cnnkit.plugins import registry

    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(registry.LAYERS, "_resolved", {})
    yield root
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
SEED_SPEC = Path(__file__).resolve().parent.parent / "specs" / "fashion_mnist_seed.json"
