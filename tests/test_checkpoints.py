"""Checkpoint maps are checked field by field like bundle fields: an edited field (checksum fixed up)
is one BundleError naming it, never a crash, a silent restart or a skipped epoch (issue 23, finding 6)."""

from __future__ import annotations

import copy

import msgpack
import pytest

from cnnkit import bundle
from cnnkit.data import load_fashion_mnist
from cnnkit.errors import BundleError
from cnnkit.training.checkpoint import read_checkpoint, restore_state
from cnnkit.training.loop import Interrupted
from cnnkit.training.resume import resume_run
from cnnkit.training.runfolder import LAST, train_in_folder
from test_runs import ema_spec, rich_spec, run_in_folder


@pytest.fixture(scope="module")
def checkpoint(synthetic_dir, tmp_path_factory) -> bytes:
    """last.cnnkit of the rich spec (Adam, validation, restore_best, early stopping) stopped at epoch 2, step 3."""
    data = load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(rich_spec(synthetic_dir), data, tmp_path_factory.mktemp("ckpt") / "runs", stop_at=9)
    folder = next((tmp_path_factory.getbasetemp()).glob("ckpt*/runs/tiny"))
    return (folder / LAST).read_bytes()


def payload(data: bytes) -> dict:
    return msgpack.unpackb(msgpack.unpackb(data)["payload"])


def edited(data: bytes, change) -> bytes:
    """The checkpoint with ``change`` applied to its checkpoint map, re-checksummed (so only the field checks can refuse it)."""
    body = payload(data)
    change(body["checkpoint"])
    return bundle.pack(body, bundle.CHECKPOINT_VERSION)


def setter(path: str, value):
    def change(saved):
        *parents, last = path.split(".")
        for key in parents:
            saved = saved[key]
        saved[last] = value
    return change


def first_weight(saved, key):
    return next(iter(saved["optimizer"]["arrays"][key]))


def nan_moment(saved):
    name = first_weight(saved, "m")
    entry = saved["optimizer"]["arrays"]["m"][name]
    entry["data"] = b"\x00\x00\xc0\x7f" + entry["data"][4:]  # a float32 NaN first


def negative_v(saved):
    name = first_weight(saved, "v")
    entry = saved["optimizer"]["arrays"]["v"][name]
    entry["data"] = b"\x00\x00\x80\xbf" + entry["data"][4:]  # -1.0 first


EDITS = [
    # (what the probe did, the edit, the field the message names)
    ("emptied optimizer arrays (Adam restarted silently)", setter("optimizer.arrays", {}), r"checkpoint\.optimizer\.arrays lacks 'm', 'v'"),
    ("a moment missing (KeyError)", lambda s: s["optimizer"]["arrays"]["m"].pop(first_weight(s, "m")), r"checkpoint\.optimizer\.arrays\.m must hold every weight"),
    ("a moment of the wrong shape", lambda s: s["optimizer"]["arrays"]["v"][first_weight(s, "v")].update(shape=[1]), r"checkpoint\.optimizer\.arrays\.v\['0\.kernel'\]: expected float32"),
    ("a NaN moment", nan_moment, r"checkpoint\.optimizer\.arrays\.m\['0\.kernel'\] holds NaN"),
    ("a negative second moment", negative_v, r"checkpoint\.optimizer\.arrays\.v\['0\.kernel'\] holds negative values"),
    ("shuffle state -1 (OverflowError)", setter("shuffle.state", "-1"), r"checkpoint\.shuffle\.state must be a 128-bit unsigned integer"),
    ("shuffle state 2**200 (OverflowError)", setter("shuffle.state", str(2**200)), r"checkpoint\.shuffle\.state must be a 128-bit unsigned integer"),
    ("shuffle state as a number", setter("shuffle.state", 5), r"checkpoint\.shuffle\.state must be a 128-bit"),
    ("an even PCG64 increment", lambda s: s["shuffle"].update(inc=str(int(s["shuffle"]["inc"]) + 1)), r"checkpoint\.shuffle\.inc must be odd"),
    ("epoch 0 (history [1, 0, 1])", setter("epoch", 0), r"checkpoint\.epoch must be an integer from 1 to 5"),
    ("epoch past the spec's", setter("epoch", 9), r"checkpoint\.epoch must be an integer from 1 to 5"),
    ("step 10**9 (an epoch skipped)", setter("step", 10**9), r"checkpoint\.step must be an integer from 0 to 8 \(each step"),
    ("examples before the step", setter("examples", 2), r"checkpoint\.step must be an integer from 0 to 2"),
    ("t = -7 (NaN blamed on the rate)", setter("optimizer.scalars.t", -7), r"checkpoint\.optimizer\.scalars\.t must be an integer from 0 to 9 \(the run took 9"),
    ("t ahead of the steps", setter("optimizer.scalars.t", 50), r"checkpoint\.optimizer\.scalars\.t must be an integer from 0 to 9"),
    ("t missing", lambda s: s["optimizer"]["scalars"].pop("t"), r"checkpoint\.optimizer\.scalars lacks 't'"),
    ("a zero rate", setter("optimizer.scalars.lr", 0.0), r"checkpoint\.optimizer\.scalars\.lr must be positive"),
    ("another optimizer type", setter("optimizer.type", "sgd"), r"checkpoint\.optimizer\.type is 'sgd', but the run's spec trains with 'adam'"),
    ("150 history rows", lambda s: s["history"].extend(copy.deepcopy(s["history"][-1:]) * 149), r"checkpoint\.history must hold one row per finished epoch \(1\), found 150"),
    ("a malformed history row (TypeError)", setter("history", [{"epoch": 1, "loss": 2.0}]), r"checkpoint\.history\[0\] lacks 'train_loss'"),
    ("a history row that is not a map", setter("history", ["epoch 1"]), r"checkpoint\.history\[0\] must be a map, found a string"),
    ("a history row out of order", lambda s: s["history"][0].update(epoch=2), r"checkpoint\.history\[0\]\.epoch must be 1"),
    ("an accuracy above 1", lambda s: s["history"][0].update(val_accuracy=1.5), r"checkpoint\.history\[0\]\.val_accuracy must be a finite number from 0 to 1"),
    ("a negative loss sum", setter("loss_sum", -1.0), r"checkpoint\.loss_sum must be a finite number of at least 0"),
    ("no first loss after steps", setter("first_loss", None), r"checkpoint\.first_loss must be nil before the first optimizer step"),
    ("stopped in the middle of an epoch", setter("stopped", True), r"checkpoint\.stopped is true, but epoch 2 has begun"),
    ("a best epoch not yet trained", setter("monitor.best_epoch", 2), r"checkpoint\.monitor\.best_epoch must be 1 \(a finished epoch\), found 2"),
    ("patience counted wrong", setter("monitor.waited", 5), r"checkpoint\.monitor\.waited must be 0"),
    ("best weights dropped", setter("best_weights", None), r"checkpoint\.best_weights must be the weights of epoch 1"),
    ("an average the run does not keep", setter("ema", {"updates": 9, "weights": {}}), r"checkpoint\.ema must be nil: the run has no train\.ema"),
    ("an unknown key", setter("note", "hi"), r"checkpoint has unexpected keys 'note'"),
    ("a missing key", lambda s: s.pop("shuffle"), r"checkpoint lacks 'shuffle'"),
]


@pytest.mark.parametrize("what, change, message", EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_checkpoint_field_is_one_bundle_error_naming_it(checkpoint, what, change, message, tmp_path):
    path = tmp_path / "last.cnnkit"
    path.write_bytes(checkpoint)
    restore_state(*read_checkpoint(path))  # the file as written passes
    path.write_bytes(edited(checkpoint, change))
    with pytest.raises(BundleError, match=f"^{path}: " + message) as caught:
        restore_state(*read_checkpoint(path))
    assert "\n" not in str(caught.value)


def test_a_position_past_the_data_is_refused_when_the_data_is_known(checkpoint, synthetic_dir, tmp_path):
    """examples within any epoch pass when read; against the data they resume on, 900 of 192 does not."""
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / LAST).write_bytes(edited(checkpoint, setter("examples", 900)))
    model, state = resume_run(folder)
    with pytest.raises(BundleError, match=r"checkpoint\.examples is 900, but an epoch has only 192 training examples"):
        train_in_folder(model, load_fashion_mnist(synthetic_dir), folder, state=state)


@pytest.fixture(scope="module")
def ema_checkpoint(synthetic_dir, tmp_path_factory) -> bytes:
    """last.cnnkit of the rich spec with train.ema, stopped after 9 optimizer steps."""
    data = load_fashion_mnist(synthetic_dir)
    base = tmp_path_factory.mktemp("ema-ckpt") / "runs"
    with pytest.raises(Interrupted):
        run_in_folder(ema_spec(synthetic_dir), data, base, stop_at=9)
    return (base / "tiny" / LAST).read_bytes()


def nan_average(saved):
    entry = saved["ema"]["weights"]["0.kernel"]
    entry["data"] = b"\x00\x00\xc0\x7f" + entry["data"][4:]


EMA_EDITS = [
    ("the average dropped", setter("ema", None), r"checkpoint\.ema must be a map: the run keeps a moving average"),
    ("an update count that is not the step count", setter("ema.updates", 8), r"checkpoint\.ema\.updates must be 9 \(one update per optimizer step\)"),
    ("a weight missing from the average", lambda s: s["ema"]["weights"].pop("0.kernel"), r"checkpoint\.ema\.weights must hold every weight"),
    ("a NaN in the average", nan_average, r"checkpoint\.ema\.weights\['0\.kernel'\] holds NaN"),
    ("an unknown key in the average", setter("ema.decay", 0.9), r"checkpoint\.ema has unexpected keys 'decay'"),
]


@pytest.mark.parametrize("what, change, message", EMA_EDITS, ids=[e[0] for e in EMA_EDITS])
def test_an_edited_moving_average_is_one_bundle_error_naming_it(ema_checkpoint, what, change, message, tmp_path):
    path = tmp_path / "last.cnnkit"
    path.write_bytes(ema_checkpoint)
    state = restore_state(*read_checkpoint(path))  # the file as written passes
    assert state.ema.updates == 9
    path.write_bytes(edited(ema_checkpoint, change))
    with pytest.raises(BundleError, match=f"^{path}: " + message):
        restore_state(*read_checkpoint(path))
