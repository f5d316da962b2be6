"""Reads are bounded by what a file holds, not by what it claims (issue 23, findings 1-3).

A bundle is read by its real size (a 50 KB bundle no longer asks for 4 GiB of address space, so
cnnkit works under ``ulimit -v``); an .npz label of 2**40 or a .npy header claiming 3e9 images is
one line before anything is allocated. The memory-limit probes run in a subprocess with
RLIMIT_AS set (what ``ulimit -v`` sets).
"""

from __future__ import annotations

import io
import json
import re
import resource
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import cnnkit
from cnnkit.data import load_dataset
from cnnkit.errors import DataError
from cnnkit.files import read_regular
from cnnkit.spec import validate_spec
from conftest import REAL_DATA, SEED_SPEC, TINY_SPEC

ULIMIT_V_KIB = 1_000_000  # `ulimit -v 1000000`: about 1 GB of address space
CNNKIT = [sys.executable, "-m", "cnnkit"]


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (ULIMIT_V_KIB * 1024, ULIMIT_V_KIB * 1024))


def run_limited(*args, cwd, timeout=600):
    """A cnnkit command in a subprocess whose address space is capped as by `ulimit -v 1000000`."""
    return subprocess.run([*CNNKIT, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limit_address_space)


# -- finding 1: a bundle is read by its size --------------------------------------------------------


def test_predict_works_under_a_one_gigabyte_address_space_limit(tmp_path):
    model = cnnkit.build({**TINY_SPEC, "data": {"dataset": "fashion-mnist"}})
    model.save(tmp_path / "tiny.cnnkit")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    result = run_limited("predict", "tiny.cnnkit", "x.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "MemoryError" not in result.stderr and result.stdout.count("x.npy[") == 2


def test_read_regular_reads_what_is_there_and_still_notices_a_cap(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    assert read_regular(path, "file", DataError, 1000) == b"x" * 1000
    with pytest.raises(DataError, match="1,000 bytes is more than a file may have"):
        read_regular(path, "file", DataError, 999)


def test_read_regular_reads_a_file_that_reports_no_size():
    # /proc files are regular files of st_size 0 that do hold bytes: read on, still bounded.
    assert b"Name:" in read_regular("/proc/self/status", "file", DataError, 1 << 20)
    with pytest.raises(DataError, match="more than 10 bytes"):
        read_regular("/proc/self/status", "file", DataError, 10)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file(), reason="real Fashion-MNIST not installed")
def test_seed_spec_trains_saves_loads_and_predicts_under_ulimit_v(tmp_path):
    # The whole round under `ulimit -v 1000000`: train the seed spec on a subset, save, load, predict.
    result = run_limited("run", SEED_SPEC, "--out", "seed.cnnkit", "--quiet", "--run-dir", "runs",
                         "--set", "data.train_limit=2000", "--set", "data.test_limit=500", "--set", "train.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from cnnkit.data import load_fashion_mnist

    np.save(tmp_path / "garments.npy", load_fashion_mnist(REAL_DATA, test_limit=8, splits=("test",)).test_images)
    result = run_limited("predict", "seed.cnnkit", "garments.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("garments.npy[") == 8
    result = run_limited("evaluate", "seed.cnnkit", "--limit", "500", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] > 0.5  # one epoch on 2,000 images: well above chance (0.1)


# -- findings 2 and 3: an .npz's claims are checked before anything is allocated --------------------


def npy_bytes(array: np.ndarray | None = None, *, shape=None, descr="|u1", data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy member: ``array`` as np.save writes it, or a header claiming ``shape`` followed by ``data``."""
    out = io.BytesIO()
    if array is not None:
        np.save(out, array)
        return out.getvalue()
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    (np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0)(out, header)
    return out.getvalue() + data


def write_members(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def good_members(n=32, test=8) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    return {"x_train": npy_bytes(x), "y_train": npy_bytes(y), "x_test": npy_bytes(x[:test]), "y_test": npy_bytes(y[:test])}


def load_npz(path, **extra):
    spec = validate_spec({**TINY_SPEC, "data": {"dataset": "npz", "path": str(path), **extra}})
    return load_dataset(spec.data, (1, 28, 28))


# In-process only labels whose names old code could still build (2**40 is the subprocess test below).
@pytest.mark.parametrize("label", [100_000, 10**6])
def test_a_huge_label_without_class_names_is_one_line_before_anything_is_built(tmp_path, label):
    members = good_members()
    y = np.random.default_rng(0).integers(0, 10, 32)
    y[3] = label
    members["y_train"] = npy_bytes(y)
    with pytest.raises(DataError, match=rf"npz: train labels go up to {label:,} in \S*big.npz, which has no classes array; .*at most 100,000 classes") as caught:
        load_npz(write_members(tmp_path / "big.npz", members))
    assert "\n" not in str(caught.value)


def test_a_huge_label_with_class_names_is_the_usual_range_error(tmp_path):
    members = good_members()
    y = np.zeros(32, np.int64)
    y[3] = 2**40
    members["y_train"] = npy_bytes(y)
    members["classes"] = npy_bytes(np.array([str(k) for k in range(10)]))
    with pytest.raises(DataError, match=r"train labels range over 0..1099511627776, but there are 10 classes"):
        load_npz(write_members(tmp_path / "big.npz", members))


@pytest.mark.parametrize("label", [2**40, 2**63 - 1])
def test_a_cli_run_on_a_huge_label_is_one_line_under_a_memory_limit(tmp_path, label):
    members = good_members()
    y = np.zeros(32, np.int64)
    y[3] = label
    members["y_train"] = npy_bytes(y)
    write_members(tmp_path / "big.npz", members)
    (tmp_path / "s.json").write_text(json.dumps({**TINY_SPEC, "data": {"dataset": "npz", "path": "big.npz"}}))
    result = run_limited("run", "s.json", "--quiet", "--run-dir", "runs", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: npz: train labels go up to {label:,} in big.npz, which has no classes array")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize("shape", [(3_000_000_000, 28, 28), (2**62, 28, 28), (5, 28, 28)])
def test_an_npy_header_claiming_more_than_its_member_holds_is_one_line(tmp_path, compression, shape):
    members = good_members()
    members["x_train"] = npy_bytes(shape=shape, data=np.zeros((4, 28, 28), np.uint8).tobytes())
    path = write_members(tmp_path / "claims.npz", members, compression)
    claimed = np.prod(shape, dtype=object) * 1
    expected = f"claims.npz: array 'x_train' claims shape {list(shape)} ({claimed:,} bytes) but its .npy member holds {4 * 28 * 28:,}"
    with pytest.raises(DataError, match=re.escape(expected)):
        load_npz(path)


def test_a_cli_run_on_a_lying_header_is_one_line_under_a_memory_limit(tmp_path):
    members = good_members()
    members["x_train"] = npy_bytes(shape=(3_000_000_000, 28, 28), data=np.zeros((4, 28, 28), np.uint8).tobytes())
    write_members(tmp_path / "claims.npz", members, zipfile.ZIP_DEFLATED)
    (tmp_path / "s.json").write_text(json.dumps({**TINY_SPEC, "data": {"dataset": "npz", "path": "claims.npz"}}))
    result = run_limited("run", "s.json", "--quiet", "--run-dir", "runs", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "claims shape [3000000000, 28, 28]" in result.stderr and "internal error" not in result.stderr


def test_a_header_of_an_unknown_npy_version_is_refused(tmp_path):
    members = good_members()
    members["x_train"] = b"\x93NUMPY\x07\x00" + members["x_train"][8:]
    with pytest.raises(DataError, match=r"array 'x_train' is not a readable \.npy member"):
        load_npz(write_members(tmp_path / "v7.npz", members))


def test_honest_npz_files_still_load_stored_and_compressed(tmp_path):
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        data = load_npz(write_members(tmp_path / f"ok{compression}.npz", good_members(), compression))
        assert data.train_images.shape == (32, 28, 28) and len(data.test_labels) == 8
