"""The bundle file: round trips, the strict reader's checks, atomic saves, determinism, the Node reader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnnkit
from cnnkit import bundle
from cnnkit.data import Dataset

TOOLS = Path(__file__).resolve().parent.parent / "tools"

SPEC = {
    "name": "small",
    "input": {"shape": [1, 8, 8]},
    "layers": [
        {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3},
        {"type": "softmax"},
    ],
    "train": {"epochs": 2, "batch_size": 4, "optimizer": {"type": "sgd", "lr": 0.05}, "seed": 3},
}


def tiny_data(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        train_images=rng.integers(0, 256, (24, 8, 8)).astype(np.uint8),
        train_labels=rng.integers(0, 3, 24),
        test_images=rng.integers(0, 256, (12, 8, 8)).astype(np.uint8),
        test_labels=rng.integers(0, 3, 12),
        classes=["cat", "dog", "owl"],
        source="generated",
    )


def tiny_model() -> cnnkit.Model:
    """An untrained model with hand-set classes and metadata: no data or training involved."""
    model = cnnkit.build(SPEC)
    model.classes = ["cat", "dog", "owl"]
    model.metadata = {"seed": 3, "history": [{"epoch": 1, "train_loss": 1.25}], "metrics": {"test_accuracy": 0.5}}
    return model


def payload_of(data: bytes) -> dict:
    return msgpack.unpackb(msgpack.unpackb(data)["payload"])


def repack(payload: dict, **outer) -> bytes:
    """Bundle bytes around ``payload`` with a correct checksum (so the checks after it are reached)."""
    body = msgpack.packb(payload, use_bin_type=True)
    fields = {"format": bundle.FORMAT, "version": list(bundle.VERSION), "sha256": hashlib.sha256(body).digest(), "payload": body}
    fields.update(outer)
    return msgpack.packb(fields, use_bin_type=True)


# --------------------------------------------------------------------------------------------------
# Round trips


def test_save_load_round_trip_keeps_everything(tmp_path):
    model = tiny_model()
    path = model.save(tmp_path / "m.cnnkit")
    loaded = cnnkit.load(path)
    assert loaded.spec == model.spec
    assert loaded.classes == model.classes
    assert loaded.metadata == model.metadata
    assert set(loaded.weights) == set(model.weights)
    for name, array in model.weights.items():
        assert loaded.weights[name].dtype == np.float32
        np.testing.assert_array_equal(loaded.weights[name], array)
    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))


def test_read_reports_contents_without_building(tmp_path):
    path = cnnkit.save(tiny_model(), tmp_path / "m.cnnkit")
    b = bundle.read(path)
    assert b.version == bundle.VERSION
    assert b.classes == ["cat", "dog", "owl"]
    assert b.providers["conv2d"]["dist"] == "cnnkit"
    assert b.sha256 == hashlib.sha256(msgpack.unpackb(path.read_bytes())["payload"]).hexdigest()
    assert [layer["type"] for layer in b.spec["layers"]] == [layer["type"] for layer in SPEC["layers"]]


@st.composite
def weight_arrays(draw):
    dtype = draw(st.sampled_from(sorted(bundle.DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = hnp.from_dtype(np.dtype(dtype), allow_nan=False, allow_infinity=False) if dtype.startswith("float") else None
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.from_regex(r"0\.[a-z_]{1,12}", fullmatch=True), weight_arrays(), min_size=1, max_size=4))
def test_any_valid_weights_round_trip_exactly(weights):
    payload = {
        "spec": {"input": {"shape": [1]}, "layers": [{"type": "relu"}]},
        "classes": ["a"],
        "providers": {"relu": {"dist": "cnnkit", "version": "0"}},
        "training": {},
        "weights": {name: bundle.weight_entry(name, array) for name, array in weights.items()},
    }
    decoded = bundle.decode(bundle.pack(payload))
    assert list(decoded.weights) == list(weights)
    for name, array in weights.items():
        got = decoded.weights[name]
        assert got.dtype == array.dtype and got.shape == array.shape
        # Byte equality: -0.0 stays -0.0 and every float keeps its exact bits.
        assert got.tobytes() == np.ascontiguousarray(array).tobytes()


@pytest.mark.parametrize("order", ["<", ">"])
def test_data_is_little_endian_whatever_the_array_byte_order(order):
    array = np.arange(6, dtype=np.dtype("float32").newbyteorder(order)).reshape(2, 3)
    entry = bundle.weight_entry("0.kernel", array)
    assert entry["data"] == np.arange(6, dtype="<f4").tobytes()
    assert entry["dtype"] == "float32" and entry["shape"] == [2, 3]


# --------------------------------------------------------------------------------------------------
# Writing refuses what it could not read back


def test_save_refuses_non_finite_weights(tmp_path):
    model = tiny_model()
    model.weights["4.bias"][1] = np.nan
    with pytest.raises(cnnkit.BundleError, match=r"'4.bias' holds NaN"):
        model.save(tmp_path / "m.cnnkit")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value, message", [(float("inf"), "finite numbers only"), (object(), "holds a object"), (b"x", "holds a bytes")])
def test_save_refuses_metadata_it_cannot_store(tmp_path, value, message):
    model = tiny_model()
    model.metadata["extra"] = [1, {"deep": value}]
    with pytest.raises(cnnkit.BundleError, match=message):
        model.save(tmp_path / "m.cnnkit")


def test_save_refuses_class_names_that_do_not_match_the_outputs(tmp_path):
    model = tiny_model()
    model.classes = ["cat", "dog"]
    with pytest.raises(cnnkit.BundleError, match="2 class names for a model with 3 outputs"):
        model.save(tmp_path / "m.cnnkit")
    assert not list(tmp_path.iterdir())


def test_save_into_missing_folder_is_a_bundle_error(tmp_path):
    with pytest.raises(cnnkit.BundleError, match="does not exist"):
        tiny_model().save(tmp_path / "nope" / "m.cnnkit")


# --------------------------------------------------------------------------------------------------
# The strict reader: each check, with the message a user sees


def _mutated(change) -> bytes:
    payload = payload_of(bundle.encode(tiny_model()))
    change(payload)
    return repack(payload)


def _set_weight(name, **fields):
    return lambda p: p["weights"][name].update(fields)


READER_CASES = [
    ("extra weight", lambda p: p["weights"].__setitem__("4.extra", bundle.weight_entry("4.extra", np.zeros(2, np.float32))), r"unexpected \['4.extra'\]"),
    ("missing weight", lambda p: p["weights"].pop("0.bias"), r"missing \['0.bias'\]"),
    ("wrong shape", _set_weight("4.bias", shape=[1, 3]), r"'4.bias' has shape \[1, 3\], the spec needs \[3\]"),
    ("data too short", _set_weight("4.bias", data=b"\0" * 8), r"needs 12 bytes of data, found 8"),
    ("huge dims", _set_weight("4.bias", shape=[2**62, 2**62, 2**62]), r"needs [0-9,]+ bytes of data, found 12"),
    ("negative dim", _set_weight("4.bias", shape=[-3]), r"shape must be an array of at most 8 non-negative"),
    ("bool dim", _set_weight("4.bias", shape=[True, 3]), r"shape must be"),
    ("object dtype", _set_weight("4.bias", dtype="object"), r"dtype 'object' is not allowed"),
    ("big-endian dtype", _set_weight("4.bias", dtype=">f4"), r"dtype '>f4' is not allowed"),
    ("unicode dtype", _set_weight("4.bias", dtype="<U3"), r"is not allowed"),
    ("nan weight", _set_weight("4.bias", data=np.array([0, np.nan, 0], "<f4").tobytes()), r"holds NaN or infinite"),
    ("int weight", _set_weight("4.bias", dtype="int32"), r"dtype int32; cnnkit layers run on floating-point"),
    ("extra weight key", _set_weight("4.bias", pickle=b"\x80\x04"), r"unexpected keys 'pickle'"),
    ("bad weight name", lambda p: p["weights"].__setitem__("../x", p["weights"].pop("4.bias")), r"weight names look like"),
    ("weight of no layer", lambda p: p["weights"].__setitem__("9.bias", p["weights"].pop("4.bias")), r"only 6 layers"),
    ("non-dict layer", lambda p: p["spec"]["layers"].__setitem__(1, "relu"), r"spec.layers\[1\] must be a map, found string"),
    ("layer without type", lambda p: p["spec"]["layers"][1].pop("type"), r"layers\[1\].type must be a string, found nil"),
    ("invalid layer param", lambda p: p["spec"]["layers"][0].__setitem__("filters", -2), r"embedded spec is invalid: layers\[0\].filters"),
    ("unknown layer param", lambda p: p["spec"]["layers"][0].__setitem__("evil", 1), r"embedded spec is invalid: layers\[0\].evil"),
    # A top-level key the reader does not know may change what the model computes (a newer writer's predict.tta did).
    ("unknown spec key", lambda p: p["spec"].__setitem__("postprocess", {"temperature": 2.0}), r"embedded spec is invalid: postprocess: unknown field"),
    ("bad test-time augmentation", lambda p: p["spec"].__setitem__("predict", {"tta": ["vflip"]}), r"embedded spec is invalid: predict.tta: each transform is"),
    ("huge input", lambda p: p["spec"]["input"].__setitem__("shape", [1, 2**40, 2**40]), r"weights do not match|has shape|embedded spec"),
    ("missing provider", lambda p: p["providers"].pop("relu"), r"providers does not name the distribution of layer types \['relu'\]"),
    ("unknown layer type", lambda p: (p["spec"]["layers"][1].__setitem__("type", "quantum"), p["providers"].__setitem__("quantum", {"dist": "cnnkit-quantum", "version": "9"}), p["providers"].pop("relu")),
     r"'quantum' comes from cnnkit-quantum 9, which is not installed: pip install cnnkit-quantum"),
    ("classes not strings", lambda p: p["classes"].__setitem__(0, 7), r"classes\[0\] must be a string, found integer"),
    ("class count", lambda p: p["classes"].pop(), r"2 class names for a model with 3 outputs"),
    ("binary in training", lambda p: p["training"].__setitem__("blob", b"\x80\x04cos\nsystem\n"), r"training.blob holds binary data"),
    ("unknown payload key", lambda p: p.__setitem__("code", "import os"), r"unexpected keys 'code'"),
    ("missing payload key", lambda p: p.pop("providers"), r"lacks 'providers'"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in READER_CASES], ids=[c[0] for c in READER_CASES])
def test_reader_rejects_with_a_precise_message(tmp_path, change, message):
    path = tmp_path / "bad.cnnkit"
    path.write_bytes(_mutated(change))
    with pytest.raises(cnnkit.BundleError, match=message) as info:
        cnnkit.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_newer_major_version_is_reported_before_anything_else():
    data = msgpack.packb({"format": bundle.FORMAT, "version": [2, 0], "anything": "new"})
    with pytest.raises(cnnkit.BundleError, match=r"format 2.0 was made by a newer cnnkit; .*upgrade cnnkit"):
        bundle.decode(data, "m.cnnkit")


def test_newer_minor_version_may_add_keys_which_are_ignored():
    payload = payload_of(bundle.encode(tiny_model()))
    payload["future"] = {"note": "added in 1.2"}
    payload["weights"]["4.bias"]["quantization"] = None
    b = bundle.decode(repack(payload, version=[1, 2], signature=b"x"))
    assert b.version == (1, 2) and "future" not in b.spec
    with pytest.raises(cnnkit.BundleError, match="unexpected keys"):
        bundle.decode(repack(payload))  # the same keys claimed by a 1.1 file are an error


def test_a_payload_with_extra_keys_is_packed_once_and_read_back_whole(monkeypatch, tmp_path):
    """A checkpoint is a model's payload plus its checkpoint map, packed once; the reader keeps the
    map (Bundle.extra) instead of dropping it, so nobody unpacks the file a second time."""
    from cnnkit.training.checkpoint import encode_checkpoint, read_checkpoint
    from cnnkit.training.loop import new_state

    model = tiny_model()
    data = bundle.pack({**bundle.model_payload(model), "checkpoint": {"epoch": 2}}, bundle.CHECKPOINT_VERSION)
    b = bundle.decode(data)
    assert b.version == (1, 2) and b.extra == {"checkpoint": {"epoch": 2}} and b.classes == model.classes
    assert bundle.decode(bundle.encode(model)).extra == {}
    calls = {"packb": 0, "unpackb": 0}
    for name in calls:
        real = getattr(msgpack, name)
        monkeypatch.setattr(msgpack, name, lambda *a, _real=real, _name=name, **k: calls.__setitem__(_name, calls[_name] + 1) or _real(*a, **k))
    written = encode_checkpoint(model, new_state(model))
    assert calls == {"packb": 2, "unpackb": 0}  # the payload, then the outer map; nothing unpacked and repacked
    path = tmp_path / "last.cnnkit"
    path.write_bytes(written)
    _, saved = read_checkpoint(path)
    assert calls["unpackb"] == 2 and saved["epoch"] == 1  # the outer map and the payload, each once


def test_checksum_mismatch():
    data = bytearray(bundle.encode(tiny_model()))
    data[-5] ^= 0x01  # inside the last weight's data
    with pytest.raises(cnnkit.BundleError, match="checksum mismatch"):
        bundle.decode(bytes(data))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"\x93\x01\x02\x03", "does not start with a msgpack map"),
        (msgpack.packb({"format": "other"}), "not a cnnkit bundle"),
        (msgpack.packb({"format": bundle.FORMAT, "version": "1.0"}), r"'version' must be \[major, minor\]"),
        (msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": b"1" * 32}), "lacks 'payload'"),
        (msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": "ab", "payload": b""}), "'sha256' must be binary, found string"),
        (msgpack.packb({"format": bundle.FORMAT}), r"'version' must be \[major, minor\]"),
        (b"\x82\xa6format\xadcnnkit.bundle\xa6format\xadcnnkit.bundle", "duplicate key 'format'"),
        (b"\x81\x01\x02", "map keys must be strings"),
        (b"\x81\xa1a\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", "non-finite float nan"),
        (b"\x81\xa1a\xc1", "invalid msgpack byte 0xc1"),
        (b"\x81\xa1a\xa3\xff\xfe\xfd", "malformed msgpack"),
        (b"\x81\xa1a" + b"\x91" * 100 + b"\xc0", "nesting deeper than 32"),
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "array claims 4294967295 entries but only 0 bytes remain"),
        (b"\x81\xa1a\xc6\xff\xff\xff\xff", "bin claims 4294967295 bytes"),
        (b"\x81\xa1a\xc0\xc0", "1 trailing bytes"),
    ],
)
def test_malformed_files(data, message):
    with pytest.raises(cnnkit.BundleError, match=message):
        bundle.decode(data, "x.cnnkit")


@pytest.mark.parametrize(
    "head, kind",
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "a PNG image"),  # 0x89 starts a msgpack map: once "map keys must be strings"
        (b"\xff\xd8\xff\xe0\0\x10JFIF\0", "a JPEG image"),
        (b"GIF89a\x1c\0\x1c\0", "a GIF image"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "a WebP image"),
        (b"\x93NUMPY\x01\0v\0{'descr'", "a NumPy .npy array"),
        (b"PK\x03\x04\x14\0\0\0", "a zip archive (an .npz array file?)"),
        (b"\x08\x08\x12\x07pytorch\x1a\x032.1", "an ONNX model"),
    ],
)
def test_a_file_that_is_no_bundle_is_named_by_what_it_looks_like(head, kind):
    with pytest.raises(cnnkit.BundleError) as caught:
        bundle.decode(head + bytes(100), "boot.png")
    assert str(caught.value) == f"boot.png is not a cnnkit bundle (it looks like {kind})"


def test_nested_preallocation_bomb_is_refused_before_msgpack_allocates():
    # 200 nested arrays each claiming a million entries: a naive msgpack reader asks for 1.6 GB up front.
    bomb = b"\x81\xa1a" + b"\xdd\x00\x10\x00\x00" * 200 + b"\x00" * (1 << 20)
    with pytest.raises(cnnkit.BundleError, match="nesting deeper than 32|claims"):
        bundle.decode(bomb)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(cnnkit.BundleError, match="bundle not found"):
        bundle.read(tmp_path / "missing.cnnkit")
    with pytest.raises(cnnkit.BundleError, match="is a directory"):
        bundle.read(tmp_path)


def test_cli_turns_a_bad_bundle_into_one_line_and_exit_1(tmp_path):
    path = tmp_path / "bad.cnnkit"
    path.write_bytes(_mutated(_set_weight("4.bias", dtype="object")))
    result = subprocess.run([sys.executable, "-m", "cnnkit.cli", "predict", str(path), str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "dtype 'object' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------------
# Atomic writes


def test_failed_write_keeps_the_previous_bundle_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tiny_model().save(tmp_path / "m.cnnkit")
    before = path.read_bytes()
    model = tiny_model()
    model.weights["4.bias"][:] = 1.0
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(cnnkit.BundleError, match="cannot write .*No space left on device"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.cnnkit"]


_KILLED_WRITER = """
import os, sys, time
from cnnkit import bundle
real_fdopen = os.fdopen
class Slow:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): self.fh.close()
    def flush(self): self.fh.flush()
    def fileno(self): return self.fh.fileno()
    def write(self, data):
        for i in range(0, len(data), 1 << 16):
            self.fh.write(data[i:i + 1 << 16]); self.fh.flush()
            if i > len(data) // 2:
                print("halfway", flush=True); time.sleep(60)
os.fdopen = lambda fd, mode: Slow(real_fdopen(fd, mode))
bundle.write_atomic(sys.argv[1], os.urandom(8 << 20))
"""


def test_save_killed_midway_leaves_the_previous_bundle_intact(tmp_path):
    path = tiny_model().save(tmp_path / "m.cnnkit")
    before = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "halfway"
        temps = [p for p in tmp_path.iterdir() if p.name != "m.cnnkit"]
        assert len(temps) == 1 and temps[0].stat().st_size > 4 << 20  # really midway through 8 MiB
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert path.read_bytes() == before
    assert bundle.read(path).sha256 == hashlib.sha256(payload_of_bytes(before)).hexdigest()
    # SIGKILL allows no clean-up; the next save to the same path sweeps the dead writer's temp file.
    tiny_model().save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.cnnkit"]


def payload_of_bytes(data: bytes) -> bytes:
    return msgpack.unpackb(data)["payload"]


def test_saved_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tiny_model().save(tmp_path / "m.cnnkit")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_same_spec_seed_and_data_give_byte_identical_bundles(tmp_path):
    first = cnnkit.train(SPEC, data=tiny_data()).save(tmp_path / "a.cnnkit").read_bytes()
    second = cnnkit.train(SPEC, data=tiny_data()).save(tmp_path / "b.cnnkit").read_bytes()
    assert first == second
    other_seed = dict(SPEC, train=dict(SPEC["train"], seed=4))
    assert cnnkit.train(other_seed, data=tiny_data()).save(tmp_path / "c.cnnkit").read_bytes() != first
    assert len(bundle.read(tmp_path / "a.cnnkit").training["history"]) == 2


# --------------------------------------------------------------------------------------------------
# A reader in another language, written from docs/FORMAT.md


def _node_reader():
    # CI installs node's dependencies (make setup), so there a missing reader is a failure, not a skip.
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    node = shutil.which("node")
    if node is None:
        missing("node is not installed")
    if not (TOOLS / "node_modules" / "@msgpack" / "msgpack" / "package.json").is_file():
        missing("npm package @msgpack/msgpack is not installed (make setup runs npm ci --prefix tools)")
    return node


def test_node_reader_agrees_with_python(tmp_path):
    node = _node_reader()
    model = tiny_model()
    model.weights["0.bias"][:] = [-0.0, 3.5]
    path = model.save(tmp_path / "m.cnnkit")
    extra = {
        "spec": {"input": {"shape": [1]}, "layers": [{"type": "relu"}]},
        "classes": ["a"],
        "providers": {"relu": {"dist": "cnnkit", "version": "0"}},
        "training": {},
        "weights": {
            f"0.{dtype}": bundle.weight_entry("0.x", np.random.default_rng(5).normal(0, 1e3, (3, 2)).astype(dtype) if dtype != "bool" else np.array([[True, False]]))
            for dtype in bundle.DTYPES
        },
    }
    extra["weights"]["0.uint64"] = bundle.weight_entry("0.x", np.array([2**64 - 1, 2**53 + 1, 7], np.uint64))
    extra["weights"]["0.empty"] = bundle.weight_entry("0.x", np.zeros((0, 4), np.float32))
    all_dtypes = tmp_path / "dtypes.cnnkit"
    all_dtypes.write_bytes(bundle.pack(extra))
    for file in (path, all_dtypes):
        result = subprocess.run([node, str(TOOLS / "read_bundle.mjs"), str(file), "--json"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        from_node = json.loads(result.stdout)
        b = bundle.read(file)
        assert from_node["sha256"] == b.sha256 and from_node["version"] == list(b.version)
        expected = [{"name": n, "dtype": w.dtype.name, "shape": list(w.shape), **bundle.weight_fingerprint(w)} for n, w in b.weights.items()]
        for w in from_node["weights"]:
            w["sum"] = float(w["sum"])  # JavaScript writes 1.8e19 as 18000000000000000000; same double
        assert from_node["weights"] == expected  # sums compared exactly, not approximately


@pytest.mark.parametrize(
    "data, message",
    [
        (lambda good: good[:-3], "malformed msgpack"),
        (lambda good: good[:-5] + bytes([good[-5] ^ 1]) + good[-4:], "checksum mismatch"),
        (lambda good: msgpack.packb({"format": bundle.FORMAT, "version": [2, 0]}), "made by a newer cnnkit"),
        (lambda good: msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": msgpack.ExtType(1, b"x")}), "extension type 1 is not allowed"),
    ],
)
def test_node_reader_rejects_bad_files(tmp_path, data, message):
    node = _node_reader()
    path = tmp_path / "bad.cnnkit"
    path.write_bytes(data(bundle.encode(tiny_model())))
    result = subprocess.run([node, str(TOOLS / "read_bundle.mjs"), str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
