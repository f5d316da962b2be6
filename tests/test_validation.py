"""Validation split, per-epoch validation scores, early stopping and best weights; without a split nothing changes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import cnnkit
from cnnkit import SpecError
from cnnkit.data import Dataset
from cnnkit.training import loop
from cnnkit.training.validation import Monitor, score, stratified_split
from conftest import TINY_SPEC, synthetic_images

pytestmark = pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")
CLASSES = [f"c{i}" for i in range(10)]


def tiny_data(train=240, test=100) -> Dataset:
    x, y = synthetic_images(train, 1)
    xt, yt = synthetic_images(test, 2)
    return Dataset(x, y.astype(np.int64), xt, yt.astype(np.int64), CLASSES, "synthetic")


def spec_with(validation=None, **train) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    if validation is not None:
        spec["data"]["validation"] = validation
    spec["train"].update(train)
    return spec


# -- the split -------------------------------------------------------------------------------------


def test_split_is_stratified_exact_sorted_and_seeded():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    np.random.default_rng(0).shuffle(labels)
    train, held = stratified_split(labels, 100, seed=1, class_names=CLASSES[:4])
    assert len(held) == 100 and len(train) == 900
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(1000))
    assert (np.diff(train) > 0).all() and (np.diff(held) > 0).all()
    assert np.bincount(labels[held], minlength=4).tolist() == [50, 30, 15, 5]  # each class its share
    again, other = stratified_split(labels, 100, 1, CLASSES[:4])[1], stratified_split(labels, 100, 2, CLASSES[:4])[1]
    assert np.array_equal(held, again) and not np.array_equal(held, other)


def test_fraction_and_largest_remainder_rounding():
    labels = np.repeat(np.arange(3), [10, 10, 10])
    _, held = stratified_split(labels, 0.1, 0, CLASSES[:3])
    assert len(held) == 3 and np.bincount(labels[held]).tolist() == [1, 1, 1]
    _, held = stratified_split(labels, 4, 0, CLASSES[:3])  # 4/3 per class: one class gets the extra example
    assert sorted(np.bincount(labels[held], minlength=3).tolist()) == [1, 1, 2]


@pytest.mark.parametrize(
    ("size", "fragment"),
    [(240, "holds out 240 examples, but the training set has only 240"), (1000, "has only 240"), (0.001, "holds out no example")],
)
def test_impossible_splits_name_data_validation(size, fragment):
    labels = np.arange(240) % 10
    with pytest.raises(SpecError, match=f"^data.validation: .*{fragment}"):
        stratified_split(labels, size, 0, CLASSES)


def test_a_split_that_empties_a_class_is_refused():
    labels = np.array([0] * 50 + [1] * 1)
    with pytest.raises(SpecError, match=r"data.validation: would hold out all 1 training examples of class 1 \('c1'\)"):
        stratified_split(labels, 0.5, 0, CLASSES[:2])


@pytest.mark.parametrize("value", [0, -3, 1.0, 1.5, 0.0, True, "10%", [10]])
def test_bad_validation_values_are_spec_errors(value):
    with pytest.raises(SpecError, match="data.validation: expected a number of examples"):
        cnnkit.build(spec_with(value))


@pytest.mark.parametrize(
    ("train", "path"),
    [({"early_stopping": {"patience": 2}}, "train.early_stopping: needs data.validation"),
     ({"restore_best": True}, "train.restore_best: needs data.validation"),
     ({"early_stopping": {"min_delta": float("nan")}}, "train.early_stopping.min_delta: input should be a finite number")],
)
def test_validation_only_keys_need_a_split(train, path):
    with pytest.raises(SpecError, match=path):
        cnnkit.build(spec_with(None, **train))


# -- training with a split -------------------------------------------------------------------------


def test_epochs_are_scored_on_the_split_and_the_test_set_once_at_the_end(monkeypatch):
    test_scorings = []
    original = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: test_scorings.append(1) or original(*a, **k))
    records = []
    model = cnnkit.train(spec_with(40, epochs=3), tiny_data(), on_epoch=records.append)
    assert len(test_scorings) == 1
    assert all(r.test_accuracy is None and r.val_loss is not None for r in records)
    meta = model.metadata
    assert meta["train_examples"] == 200 and meta["validation"]["examples"] == 40 and meta["test_examples"] == 100
    assert set(meta["history"][0]) == {"epoch", "train_loss", "lr", "val_loss", "val_accuracy", "val_macro_f1"}
    x, y = synthetic_images(100, 2)
    final = loop.evaluate(model, x, y)
    assert meta["metrics"] == {"test_accuracy": final["accuracy"], "test_macro_f1": final["macro_f1"]}


def test_validation_scores_match_an_independent_computation():
    data = tiny_data()
    spec = spec_with(40, epochs=1, restore_best=False)
    records = []
    model = cnnkit.train(spec, data, on_epoch=records.append)
    _, held = stratified_split(data.train_labels, 40, 0, CLASSES)
    proba = model.predict_proba(data.train_images[held]).astype(np.float64)
    labels = data.train_labels[held]
    assert records[0].val_loss == pytest.approx(-np.log(proba[np.arange(40), labels]).mean(), rel=1e-5)
    assert records[0].val_accuracy == float(np.mean(proba.argmax(axis=1) == labels))
    assert score(model, model.preprocess(data.train_images[held]), labels)["macro_f1"] == records[0].val_macro_f1


def test_early_stopping_stops_and_restores_the_best_epoch():
    data = tiny_data()
    # A min_delta no change can beat: epoch 1 is the best, and patience 2 stops training after epoch 3.
    stopping = {"patience": 2, "monitor": "val_accuracy", "min_delta": 10.0}
    model = cnnkit.train(spec_with(40, epochs=8, early_stopping=stopping), data)
    assert [r["epoch"] for r in model.metadata["history"]] == [1, 2, 3]
    assert model.metadata["validation"] == {"examples": 40, "monitor": "val_accuracy", "best_epoch": 1,
                                            "weights_from_epoch": 1, "stopped_early": True}
    one_epoch = cnnkit.train(spec_with(40, epochs=1), data)
    for name in one_epoch.weights:
        np.testing.assert_array_equal(model.weights[name], one_epoch.weights[name])


def test_restore_best_false_keeps_the_last_weights():
    data = tiny_data()
    stopping = {"patience": 1, "min_delta": 10.0}
    kept_last = cnnkit.train(spec_with(40, epochs=5, early_stopping=stopping, restore_best=False), data)
    two_epochs = cnnkit.train(spec_with(40, epochs=2, restore_best=False), data)
    assert kept_last.metadata["validation"]["weights_from_epoch"] == 2
    for name in two_epochs.weights:
        np.testing.assert_array_equal(kept_last.weights[name], two_epochs.weights[name])


def test_a_run_with_validation_is_reproducible(tmp_path):
    spec, data = spec_with(0.2, epochs=2, early_stopping={"patience": 1}), tiny_data()
    a = cnnkit.train(spec, data).save(tmp_path / "a.cnnkit").read_bytes()
    b = cnnkit.train(spec, data).save(tmp_path / "b.cnnkit").read_bytes()
    assert a == b


def test_monitor_follows_keras_rules():
    loss = Monitor("val_loss", min_delta=0.1, patience=2)
    assert loss.update(1, 1.0) and loss.best_epoch == 1
    assert not loss.update(2, 0.95)  # better, but not by more than min_delta
    assert loss.update(3, 0.85) and loss.best_epoch == 3 and loss.waited == 0
    assert not loss.update(4, 0.9) and not loss.should_stop
    assert not loss.update(5, 0.9) and loss.should_stop
    acc = Monitor("val_accuracy")
    assert acc.update(1, 0.5) and not acc.update(2, 0.5) and acc.update(3, 0.6) and acc.best_epoch == 3
    assert not Monitor("val_loss").should_stop  # no patience: never stops


# -- without a split: the seed's behaviour ---------------------------------------------------------


def test_without_a_split_nothing_new_is_stored(tmp_path):
    model = cnnkit.train(spec_with(None, epochs=2), tiny_data())
    stored = model.spec.to_dict()
    assert "validation" not in stored["data"] and "augment" not in stored["data"]
    assert "early_stopping" not in stored["train"] and "restore_best" not in stored["train"]
    assert set(model.metadata) == {"cnnkit_version", "seed", "dataset", "train_examples", "test_examples", "history", "metrics"}
    assert list(model.metadata["history"][0]) == ["epoch", "train_loss", "test_accuracy", "test_macro_f1", "lr"]
    assert model.metadata["metrics"]["test_accuracy"] == model.metadata["history"][-1]["test_accuracy"]


def test_the_cli_shows_validation_lines_and_the_final_test_score(tmp_path, synthetic_dir):
    from typer.testing import CliRunner

    from cnnkit.cli import app

    spec = spec_with(40, epochs=2, early_stopping={"patience": 3})
    spec["data"]["dir"] = str(synthetic_dir)
    (tmp_path / "v.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "v.json"), "--out", str(tmp_path / "v.cnnkit")])
    assert result.exit_code == 0, result.output
    assert "epoch 2: train loss" in result.stdout and "val accuracy" in result.stdout and "test accuracy" not in result.stdout.split("\n")[1]
    assert "test accuracy" in result.stdout and "with the weights of epoch" in result.stdout
    assert "(40 held out for validation)" in result.stdout.splitlines()[0]
    too_big = CliRunner().invoke(app, ["run", str(tmp_path / "v.json"), "--set", "data.validation=5000", "--out", str(tmp_path / "w.cnnkit")])
    assert too_big.exit_code == 1 and too_big.stderr.startswith("error: data.validation: holds out 5000 examples")
    assert not (tmp_path / "w.cnnkit").exists()


# -- the JSON Schema agrees ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    from cnnkit.spec.schema import spec_schema

    schema, _ = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_schema_accepts_the_new_keys(validator):
    spec = spec_with(0.1, early_stopping={"patience": 3, "monitor": "val_accuracy", "min_delta": 0.001}, restore_best=False)
    spec["data"]["augment"] = {"crop_padding": 2, "hflip": True, "erasing": {"p": 0.25, "scale": [0.02, 0.2], "ratio": [0.5, 2], "value": 0}}
    assert list(validator.iter_errors(spec)) == []
    cnnkit.validate_spec(spec)
    assert list(validator.iter_errors(spec_with(5000))) == []


@pytest.mark.parametrize(
    ("data", "train", "path"),
    [({"validation": 0}, {}, "$.data.validation"), ({"validation": 1.5}, {}, "$.data.validation"),
     ({"augment": {"crop": 2}}, {}, "$.data.augment"), ({"augment": {"erasing": {"p": 2}}}, {}, "$.data.augment"),
     ({"validation": 10}, {"early_stopping": {"monitor": "loss"}}, "$.train.early_stopping.monitor"),
     ({"validation": 10}, {"early_stopping": {"patience": 0}}, "$.train.early_stopping.patience")],
)
def test_the_schema_rejects_what_validation_rejects(validator, data, train, path):
    spec = spec_with(None, **train)
    spec["data"].update(data)
    errors = [e for e in validator.iter_errors(spec)]
    paths = {p.json_path for e in errors for p in [e, *(e.context or [])]}
    assert any(p.startswith(path) for p in paths), paths
    with pytest.raises(SpecError):
        cnnkit.validate_spec(spec)
