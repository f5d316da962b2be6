"""Hostile .npz datasets (issue 23, findings 2, 3, 20): seeded mutations of a good file, whose headers,
dtypes, labels and zip directory lie. Only DataError may come out, and what loads is usable; nothing
is allocated by what a header claims. The run record `cnnkit report RUN` reads is fuzzed the same way."""

from __future__ import annotations

import io
import json
import random
import struct
import zipfile
from collections import Counter

import numpy as np
import pytest

from cnnkit.data import load_dataset
from cnnkit.errors import CnnkitError, DataError
from cnnkit.spec import validate_spec
from conftest import TINY_SPEC

KEYS = ("x_train", "y_train", "x_test", "y_test")
_SHAPES = [0, 1, 3, 28, 2**31, 2**32 + 1, 3_000_000_000, 2**62, 2**63 - 1]
_DESCRS = ["|u1", "<f4", "<f8", ">i4", "<i8", "|b1", "<U4", "|O", "V8", "<c8", "<M8[s]", "|S3", "<f2", ">u2"]
_LABELS = [-1, -(2**63), 10, 12, 99_999, 100_000, 2**40, 2**63 - 1]


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _header(shape, descr: str) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return out.getvalue()


def _good_members() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 24)
    return {"x_train": _npy(x[:16]), "y_train": _npy(y[:16]), "x_test": _npy(x[16:]), "y_test": _npy(y[16:])}


def _zip(members: dict[str, bytes], compression: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return out.getvalue()


def _lying_header(rng: random.Random) -> dict[str, bytes]:
    members = _good_members()
    key = rng.choice(KEYS)
    shape = [rng.choice(_SHAPES) for _ in range(rng.randint(0, 5))]
    body = members[key][len(_header((1,), "|u1")):] if rng.random() < 0.5 else b"\0" * rng.choice([0, 8, 784, 6272])
    members[key] = _header(shape, rng.choice(_DESCRS)) + body
    return members


def _hostile_labels(rng: random.Random) -> dict[str, bytes]:
    members = _good_members()
    key = rng.choice(("y_train", "y_test"))
    y = np.load(io.BytesIO(members[key])).astype(rng.choice([np.int64, np.uint64, np.int8, np.float64]) if rng.random() < 0.3 else np.int64)
    if y.dtype.kind in "iu":
        y[rng.randrange(len(y))] = np.array(rng.choice(_LABELS)).astype(y.dtype) if y.dtype != np.int8 else -1
    members[key] = _npy(y)
    if rng.random() < 0.3:
        members["classes"] = _npy(np.array([str(k) for k in range(rng.choice([1, 10, 13]))]))
    return members


def _empty_or_missing(rng: random.Random) -> dict[str, bytes]:
    members = _good_members()
    key = rng.choice(KEYS)
    if rng.random() < 0.5:
        del members[key]
    else:
        members[key] = _npy(np.zeros((0, 28, 28), np.uint8) if key.startswith("x") else np.zeros(0, np.int64))
    return members


def _bit_flipped(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _directory_lies(rng: random.Random, data: bytes) -> bytes:
    """A central-directory entry whose sizes claim more (or less) than the member holds."""
    data = bytearray(data)
    entries = [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]
    at = rng.choice(entries)
    field = rng.choice([20, 24])  # compressed size, uncompressed size
    struct.pack_into("<I", data, at + field, rng.choice([0, 1, 2**31, 2**32 - 1, 10**9]))
    return bytes(data)


def _file(rng: random.Random) -> bytes:
    compression = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    kind = rng.randrange(6)
    if kind == 0:
        return _zip(_lying_header(rng), compression)
    if kind == 1:
        return _zip(_hostile_labels(rng), compression)
    if kind == 2:
        return _zip(_empty_or_missing(rng), compression)
    good = _zip(_good_members(), compression)
    if kind == 3:
        return _bit_flipped(rng, good)
    if kind == 4:
        return good[: rng.randrange(len(good))]
    return _directory_lies(rng, good)


def _outcome(path) -> str:
    spec = validate_spec({**TINY_SPEC, "data": {"dataset": "npz", "path": str(path)}})
    try:
        data = load_dataset(spec.data, (1, 28, 28))
    except DataError as exc:
        assert "\n" not in str(exc), str(exc)
        return "rejected"
    # What loads is usable: the images read, labels name a class, a test set exists.
    assert np.asarray(data.train_images).shape[1:] == (1, 28, 28) or np.asarray(data.train_images).shape[1:] == (28, 28)
    assert len(data.test_labels) > 0 and data.train_labels.dtype == np.int64
    assert data.train_labels.max() < len(data.classes) and data.test_labels.max() < len(data.classes)
    return "accepted"


def test_mutated_npz_files_raise_only_data_error(tmp_path):
    rng = random.Random(20261203)
    tally = Counter()
    for i in range(600):
        path = tmp_path / f"fuzz{i % 4}.npz"
        path.write_bytes(_file(rng))
        tally[_outcome(path)] += 1
    print(f"\nnpz fuzz: {sum(tally.values())} files, {tally['rejected']} rejected, {tally['accepted']} accepted")  # shows with pytest -s
    assert tally["rejected"] > 300 and tally["accepted"] > 0


# -- the run record read by `cnnkit report RUN` -------------------------------------------------------


@pytest.fixture(scope="module")
def run_with_record(tmp_path_factory, synthetic_dir):
    import cnnkit
    from cnnkit.training.runfolder import save_final

    folder = tmp_path_factory.mktemp("record")
    model = cnnkit.build({**TINY_SPEC, "data": {"dataset": "fashion-mnist", "dir": str(synthetic_dir)}})
    (folder / "run").mkdir()
    save_final(model, folder / "m.cnnkit", folder / "run")
    return folder / "run"


_VALUES = [None, 0, -1, 2**64, 1.5, "", "x" * 5000, [], {}, "../../etc/passwd", "\x1b[2J", "0" * 64, True]


def test_mutated_run_records_raise_only_cnnkit_error(run_with_record):
    from cnnkit.training.runfolder import delivered_bundle

    good = (run_with_record / "delivered.json").read_bytes()
    assert delivered_bundle(run_with_record).name == "m.cnnkit"
    rng = random.Random(7)
    for _ in range(300):
        record = json.loads(good)
        choice = rng.randrange(4)
        if choice == 0:
            record[rng.choice(["bundle", "sha256"])] = rng.choice(_VALUES)
        elif choice == 1:
            record.pop(rng.choice(["bundle", "sha256"]))
        elif choice == 2:
            record = rng.choice(_VALUES)
        text = json.dumps(record).encode()
        if choice == 3:
            text = _bit_flipped(rng, good)[: rng.randrange(1, len(good) + 1)]
        (run_with_record / "delivered.json").write_bytes(text)
        try:
            delivered_bundle(run_with_record)
        except CnnkitError as exc:
            assert "\n" not in str(exc)
    (run_with_record / "delivered.json").write_bytes(good)
