"""Hostile bundles: thousands of mutated files, pickles and ext types. Only BundleError may come out.

Every mutation class is seeded, so each run tries the same files (the counts are in FUZZ_CLASSES and
printed with ``pytest -s``). "Re-checksummed" classes mutate the payload and then fix the checksum,
so the checks behind it (keys, types, dtypes, shapes, the spec, the weight names) are reached too.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest

import cnnkit
from cnnkit import bundle
from cnnkit.runtime.model import model_from_bundle
from test_bundle import repack, tiny_model

_GOOD = bundle.encode(tiny_model())
_PAYLOAD_BYTES = msgpack.unpackb(_GOOD)["payload"]

# A protocol-0 pickle, written by hand, that would run `touch MARKER` if anything unpickled it.
def pickle_bomb(marker: Path) -> bytes:
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def _payload() -> dict:
    return msgpack.unpackb(_PAYLOAD_BYTES)


def _nodes(tree, path=()):
    """Every (container, key) position in a decoded payload, for structural mutations."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield tree, k
            yield from _nodes(v)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield tree, i
            yield from _nodes(v)


_HOSTILE_VALUES = [
    None, True, 0, -1, 2**63, -(2**63), 2**64 - 1, 1.5, "", "x" * 300, b"", b"\x80\x04\x95", [], {}, [[[]]], {"": None},
    {"dtype": "float32", "shape": [1], "data": b"\0\0\0\0"}, [2**40, 2**40], [-1], "../../etc/passwd", "\x1b[2J",
]
_BAD_DTYPES = ["object", "O", "V8", "void", "<U4", "str", "unicode", ">f4", "<f4", "float128", "complex64", "datetime64",
               "|b1", "f", "float", "int", "", "FLOAT32", "float32 ", "bytes", "S4"]


def _truncated(rng: random.Random) -> bytes:
    return _GOOD[: rng.randrange(len(_GOOD))]


def _bit_flipped(rng: random.Random) -> bytes:
    data = bytearray(_GOOD)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _msgpack_bytes_spliced(rng: random.Random) -> bytes:
    # Bytes msgpack gives meaning to (ext, never-used, huge container and bin headers) at random places.
    data = bytearray(_GOOD)
    token = rng.choice([b"\xc1", b"\xc7\x01\x05", b"\xd4\x01", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                        b"\xc6\xff\xff\xff\xf0", b"\xdb\x7f\xff\xff\xff", b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\x9f" * 40])
    at = rng.randrange(len(data))
    data[at : at + (len(token) if rng.random() < 0.5 else 0)] = token
    return bytes(data)


def _payload_bit_flipped(rng: random.Random) -> bytes:
    body = bytearray(_PAYLOAD_BYTES)
    for _ in range(rng.randint(1, 3)):
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    body = bytes(body)
    return msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": hashlib.sha256(body).digest(), "payload": body})


def _payload_truncated(rng: random.Random) -> bytes:
    body = _PAYLOAD_BYTES[: rng.randrange(len(_PAYLOAD_BYTES))]
    return msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": hashlib.sha256(body).digest(), "payload": body})


def _types_swapped(rng: random.Random) -> bytes:
    payload = _payload()
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(list(_nodes(payload)))
        container[key] = rng.choice(_HOSTILE_VALUES)
    return repack(payload)


def _keys_mangled(rng: random.Random) -> bytes:
    payload = _payload()
    dicts = [c for c, _ in _nodes(payload) if isinstance(c, dict)] + [payload]
    target = rng.choice(dicts)
    if target:
        key = rng.choice(list(target))
        value = target.pop(key)
        if rng.random() < 0.5:
            target[rng.choice(["", key.upper(), key + " ", "__reduce__", "0.kernel", "type", "weights"])] = value
    return repack(payload)


def _huge_shapes(rng: random.Random) -> bytes:
    payload = _payload()
    entry = payload["weights"][rng.choice(list(payload["weights"]))]
    choice = rng.randrange(4)
    if choice == 0:
        entry["shape"] = [rng.choice([2**31, 2**32 + 1, 2**62, 2**64 - 1, 0]) for _ in range(rng.randint(1, 9))]
    elif choice == 1:
        entry["shape"] = entry["shape"][::-1] + [1] * rng.randint(0, 8)
    elif choice == 2:
        entry["data"] = entry["data"] * rng.randint(2, 50)
    else:
        payload["spec"]["input"]["shape"] = [rng.choice([1, 3, 2**20, 2**40, 2**63]) for _ in range(rng.randint(1, 4))]
    return repack(payload)


def _deep_nesting(rng: random.Random) -> bytes:
    depth = rng.choice([20, 31, 33, 100, 400, 5000])
    if depth > 400:  # deeper than msgpack's own packer recurses: write the bytes by hand
        body = b"\x81\xa4spec" + b"\x91" * depth + b"\xc0"
        return msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": hashlib.sha256(body).digest(), "payload": body})
    nested = None
    for _ in range(depth):
        nested = [nested] if rng.random() < 0.5 else {"k": nested}
    payload = _payload()
    container, key = rng.choice(list(_nodes(payload)))
    container[key] = nested
    return repack(payload)


def _wrong_dtypes(rng: random.Random) -> bytes:
    payload = _payload()
    entry = payload["weights"][rng.choice(list(payload["weights"]))]
    entry["dtype"] = rng.choice(_BAD_DTYPES + list(bundle.DTYPES))
    return repack(payload)


def _ext_types(rng: random.Random) -> bytes:
    payload = _payload()
    container, key = rng.choice(list(_nodes(payload)))
    # Application ext codes are 0..127; -1 is msgpack's own timestamp type.
    hostile = msgpack.ExtType(rng.randrange(128), b"cos\nsystem\n(S'true'\ntR.") if rng.random() < 0.8 else msgpack.Timestamp(rng.randrange(2**32))
    container[key] = hostile
    return repack(payload)


# name -> (mutator, files per run)
FUZZ_CLASSES = {
    "truncated file": (_truncated, 900),
    "bit flips (file)": (_bit_flipped, 1500),
    "msgpack tokens spliced (ext, 0xc1, huge headers, NaN)": (_msgpack_bytes_spliced, 900),
    "bit flips (payload, re-checksummed)": (_payload_bit_flipped, 2100),
    "truncated payload (re-checksummed)": (_payload_truncated, 600),
    "swapped types (re-checksummed)": (_types_swapped, 2100),
    "missing/renamed keys (re-checksummed)": (_keys_mangled, 900),
    "huge lengths and shapes (re-checksummed)": (_huge_shapes, 900),
    "deep nesting (re-checksummed)": (_deep_nesting, 360),
    "wrong dtypes (re-checksummed)": (_wrong_dtypes, 450),
    "ext types (re-checksummed)": (_ext_types, 450),
}


def _load(data: bytes) -> None:
    model_from_bundle(bundle.decode(data, "fuzz.cnnkit"), "fuzz.cnnkit")


def _outcome(data: bytes, read=_load) -> str:
    """'rejected' (one BundleError naming the file, one line) or 'accepted'; anything else fails the test."""
    try:
        read(data)
    except cnnkit.BundleError as exc:
        message = str(exc)
        assert message.startswith("fuzz.cnnkit") and "\n" not in message, message
        return "rejected"
    return "accepted"


def test_mutated_bundles_raise_only_bundle_error():
    rng = random.Random(20240604)
    tally: dict[str, Counter] = {}
    for name, (mutate, count) in FUZZ_CLASSES.items():
        tally[name] = Counter(_outcome(mutate(rng)) for _ in range(count))
    total = sum(sum(c.values()) for c in tally.values())  # the table shows with pytest -s (or when the test fails)
    print(f"\nbundle fuzz: {total} mutated files")
    for name, counts in tally.items():
        print(f"  {name:58s} {sum(counts.values()):5d} tried, {counts['rejected']:5d} rejected, {counts['accepted']:4d} accepted")
    # Harmless mutations (a flipped mantissa bit in a weight) may load; the classes that break the
    # format must be rejected every time.
    for name in ("truncated file", "truncated payload (re-checksummed)", "ext types (re-checksummed)", "msgpack tokens spliced (ext, 0xc1, huge headers, NaN)"):
        assert tally[name]["accepted"] == 0, name
    assert tally["bit flips (file)"]["rejected"] >= 0.99 * FUZZ_CLASSES["bit flips (file)"][1]


def test_accepted_mutants_still_load_and_predict():
    # A mutation that passes every check must give a usable model, not a half-broken one.
    rng = random.Random(7)
    images = np.zeros((2, 8, 8), np.uint8)
    for _ in range(200):
        data = _payload_bit_flipped(rng)
        try:
            model = model_from_bundle(bundle.decode(data))
        except cnnkit.BundleError:
            continue
        proba = model.predict_proba(images)
        assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Pickles and ext types never run


def _with(change) -> bytes:
    payload = _payload()
    change(payload)
    return repack(payload)


def test_pickle_payloads_are_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bomb = pickle_bomb(marker)
    attempts = {
        "whole file is a pickle": bomb,
        "pickle as weight data": _with(lambda p: p["weights"]["4.bias"].update(data=bomb)),
        "pickle with object dtype": _with(lambda p: p["weights"]["4.bias"].update(dtype="object", shape=[], data=bomb)),
        "pickle in training metadata": _with(lambda p: p["training"].update(optimizer_state=bomb)),
        "pickle in the spec": _with(lambda p: p["spec"]["layers"][1].update(state=bomb)),
        "pickle as an ext type": _with(lambda p: p["training"].update(state=msgpack.ExtType(42, bomb))),
        "msgpack-numpy style array": _with(lambda p: p["weights"].update({"4.bias": {b"nd": True, b"type": b"|O", b"kind": b"O", b"data": bomb}})),
        "ext type in the outer map": msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": msgpack.ExtType(1, bomb), "payload": b""}),
    }
    for name, data in attempts.items():
        path = tmp_path / "evil.cnnkit"
        path.write_bytes(data)
        with pytest.raises(cnnkit.BundleError):
            cnnkit.load(path)
        with pytest.raises(cnnkit.BundleError):
            bundle.read(path)
        assert not marker.exists(), name


def test_ext_type_is_rejected_by_the_scan_before_msgpack_decodes_it(monkeypatch):
    hooked = []
    data = _with(lambda p: p["training"].update(when=msgpack.Timestamp(0)))  # ext type -1, packed as fixext 4
    original = msgpack.unpackb
    monkeypatch.setattr(msgpack, "unpackb", lambda *a, **k: hooked.append(1) or original(*a, **k))
    with pytest.raises(cnnkit.BundleError, match=r"extension type \(0xd6\) is not allowed.*at byte"):
        bundle.decode(data)
    assert len(hooked) == 1  # the outer map only; the payload never reached msgpack


# --------------------------------------------------------------------------------------------------
# Checkpoints: random edits of the checkpoint map, checksum fixed up. Only BundleError may come out,
# and a checkpoint that passes must resume.

from test_checkpoints import checkpoint, edited  # noqa: E402,F401  (the fixture: a rich run stopped at epoch 2, step 3)

_CHECKPOINT_VALUES = _HOSTILE_VALUES + [-7, 10**9, 0.0, -0.5, 1e308, "-1", str(2**200), str(2**128 - 1), "12x", [None], {"epoch": 1}]


def _checkpoint_nodes(saved):
    return [(saved, k) for k in saved] + list(_nodes(saved))


def _field_swapped(rng: random.Random):
    def change(saved):
        for _ in range(rng.randint(1, 2)):
            container, key = rng.choice(_checkpoint_nodes(saved))
            container[key] = copy.deepcopy(rng.choice(_CHECKPOINT_VALUES))  # a copy: the shared values must stay as they are
    return change


def _number_nudged(rng: random.Random):
    def change(saved):
        numbers = [(c, k) for c, k in _checkpoint_nodes(saved) if type(c[k]) in (int, float)]
        container, key = rng.choice(numbers)
        value = container[key]
        container[key] = rng.choice([value + 1, value - 1, -value, value * 1000, 0, type(value)(2**31)])
    return change


def _key_dropped_or_renamed(rng: random.Random):
    def change(saved):
        maps = [c for c, _ in _checkpoint_nodes(saved) if isinstance(c, dict) and c]
        target = rng.choice(maps)
        key = rng.choice(list(target))
        value = target.pop(key)
        if rng.random() < 0.5:
            target[rng.choice(["", key.upper(), key + "_", "epochs", "0.kernel"])] = value
    return change


def _array_damaged(rng: random.Random):
    def change(saved):
        holders = [saved["optimizer"]["arrays"]["m"], saved["optimizer"]["arrays"]["v"], saved["best_weights"]]
        entry = rng.choice(holders)[rng.choice(["0.kernel", "1.gamma", "1.running_var", "6.bias"])]
        choice = rng.randrange(4)
        if choice == 0:
            entry["data"] = entry["data"][: rng.randrange(len(entry["data"]))]
        elif choice == 1:  # NaN or infinity at a random float
            at = 4 * rng.randrange(len(entry["data"]) // 4)
            entry["data"] = entry["data"][:at] + rng.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\x00\x00\x80\xff"]) + entry["data"][at + 4:]
        elif choice == 2:
            entry["shape"] = entry["shape"][::-1] + [1]
        else:
            entry["dtype"] = rng.choice(["float64", "float16", "int32", "object"])
    return change


def _history_reshaped(rng: random.Random):
    def change(saved):
        rows = saved["history"]
        choice = rng.randrange(3)
        if choice == 0:
            rows.extend(copy.deepcopy(rows) * rng.randint(1, 149))
        elif choice == 1:
            rows.clear()
        else:
            rows[0].pop(rng.choice(list(rows[0])))
    return change


CHECKPOINT_FUZZ = {
    "checkpoint fields swapped for hostile values": (_field_swapped, 700),
    "checkpoint numbers nudged": (_number_nudged, 500),
    "checkpoint keys dropped or renamed": (_key_dropped_or_renamed, 300),
    "checkpoint arrays damaged": (_array_damaged, 300),
    "checkpoint history reshaped": (_history_reshaped, 100),
}


def _resume(data: bytes) -> None:
    """What a resume reads and checks: the checkpoint, its state, its position in an epoch of the 192 training examples."""
    from cnnkit.training.checkpoint import decode_checkpoint, restore_state
    from cnnkit.training.checkpoint_check import check_position

    model, saved = decode_checkpoint(data, "fuzz.cnnkit")
    state = restore_state(model, saved, "fuzz.cnnkit")
    check_position(state.epoch, state.step, state.examples, model.spec.train.batch_size, 192, "fuzz.cnnkit: checkpoint")


def test_edited_checkpoints_raise_only_bundle_error_and_accepted_ones_resume(checkpoint, synthetic_dir, tmp_path, capsys):
    import warnings

    from cnnkit.data import load_fashion_mnist
    from cnnkit.training.health import TrainingWarning
    from cnnkit.training.resume import resume_run
    from cnnkit.training.runfolder import LAST, train_in_folder

    rng = random.Random(20250923)
    tally, accepted = {}, []
    for name, (mutator, count) in CHECKPOINT_FUZZ.items():
        tally[name] = Counter()
        for _ in range(count):
            data = edited(checkpoint, mutator(rng))
            outcome = _outcome(data, _resume)
            tally[name][outcome] += 1
            if outcome == "accepted":
                accepted.append(data)
    with capsys.disabled():
        print(f"\ncheckpoint fuzz: {sum(sum(c.values()) for c in tally.values())} edited checkpoints")
        for name, counts in tally.items():
            print(f"  {name:58s} {sum(counts.values()):5d} tried, {counts['rejected']:5d} rejected, {counts['accepted']:4d} accepted")
    assert tally["checkpoint history reshaped"]["accepted"] == 0 and tally["checkpoint arrays damaged"]["accepted"] == 0
    # What passes is a checkpoint a run can go on from: a sample of them trains to the end of its epoch.
    data = load_fashion_mnist(synthetic_dir)
    for i, good in enumerate(accepted[:: max(1, len(accepted) // 6)]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / LAST).write_bytes(good)
        model, state = resume_run(folder, [f"train.epochs={max(state_epoch(good), 1)}"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrainingWarning)
            train_in_folder(model, data, folder, state=state)
        assert model.metadata["history"][-1]["epoch"] <= state_epoch(good)


def state_epoch(data: bytes) -> int:
    from cnnkit.training.checkpoint import decode_checkpoint

    return decode_checkpoint(data)[1]["epoch"]
