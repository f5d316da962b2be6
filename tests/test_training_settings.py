"""The spec's training settings: train.schedule, train.label_smoothing, train.clip_grad_norm and adamw.

Validation names the JSON path of every mistake (pydantic and the JSON Schema agree); the training
loop steps the schedule once per batch, clips before the update and smooths the loss's targets.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from jsonschema import Draft7Validator
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data import Dataset
from cnnkit.optim import build_schedule
from cnnkit.spec.schema import spec_schema
from conftest import TINY_SPEC, synthetic_images


def spec_with(**train) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["train"].update(train)
    return spec


def tiny_data(train=240, test=100) -> Dataset:
    x, y = synthetic_images(train, 1)
    xt, yt = synthetic_images(test, 2)
    return Dataset(x, y.astype(np.int64), xt, yt.astype(np.int64), [f"c{i}" for i in range(10)], "synthetic")


# --------------------------------------------------------------------------------------------------
# Validation


def test_defaults_and_normalised_values():
    train = cnnkit.validate_spec(spec_with()).train
    assert (train.schedule, train.label_smoothing, train.clip_grad_norm) == (None, 0.0, None)
    train = cnnkit.validate_spec(spec_with(optimizer={"type": "adamw"}, schedule={"type": "onecycle", "max_lr": 0.003},
                                           label_smoothing=0.1, clip_grad_norm=5)).train
    assert train.optimizer.model_dump() == {"type": "adamw", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
    assert train.schedule.max_lr == 0.003 and train.schedule.pct_start == 0.3 and train.schedule.total_steps is None
    assert train.clip_grad_norm == 5.0 and train.label_smoothing == 0.1
    assert cnnkit.validate_spec(spec_with(schedule={"type": "step", "step_size": 10})).to_dict()["train"]["schedule"] == {"type": "step", "step_size": 10, "gamma": 0.1}


BAD = [
    ({"schedule": {"type": "onecycle"}}, "train.schedule.max_lr", "required field is missing"),
    ({"schedule": {"type": "cosin"}}, "train.schedule.type", "expected one of 'constant', 'step', 'cosine', 'onecycle'. Received: \"cosin\""),
    ({"schedule": {"lr": 0.1}}, "train.schedule.type", "Received: null"),
    ({"schedule": "cosine"}, "train.schedule", "input should be an object ({...}). Received: \"cosine\""),
    ({"schedule": {"type": "cosine", "warmup": 3}}, "train.schedule.warmup", "did you mean 'warmup_steps'?"),
    ({"schedule": {"type": "cosine", "warmup_steps": 20, "total_steps": 20}}, "train.schedule.warmup_steps", "must be less than the total length (20 optimizer steps)"),
    ({"schedule": {"type": "onecycle", "max_lr": 0.1, "total_steps": 2}}, "train.schedule.pct_start", "leaves a phase without steps"),
    ({"schedule": {"type": "onecycle", "max_lr": float("nan")}}, "train.schedule.max_lr", "finite number. Received: NaN"),
    ({"schedule": {"type": "step", "step_size": 0}}, "train.schedule.step_size", "greater than 0"),
    ({"schedule": {"type": "step", "step_size": 5, "gamma": float("inf")}}, "train.schedule.gamma", "finite number"),
    ({"label_smoothing": 1.0}, "train.label_smoothing", "less than 1"),
    ({"label_smoothing": -0.1}, "train.label_smoothing", "greater than or equal to 0"),
    ({"label_smoothing": float("nan")}, "train.label_smoothing", "finite number"),
    ({"clip_grad_norm": 0}, "train.clip_grad_norm", "greater than 0"),
    ({"clip_grad_norm": float("inf")}, "train.clip_grad_norm", "finite number. Received: Infinity"),
    ({"clip_grad_norm": "1"}, "train.clip_grad_norm", "Received: \"1\""),
    ({"optimizer": {"type": "adamw", "momentum": 0.9}}, "train.optimizer.momentum", "unknown field"),
    ({"optimizer": {"type": "adamw", "weight_decay": -1}}, "train.optimizer.weight_decay", "greater than or equal to 0"),
]


@pytest.mark.parametrize("change, path, fragment", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_training_settings_name_their_path(change, path, fragment):
    with pytest.raises(cnnkit.SpecError) as err:
        cnnkit.validate_spec(spec_with(**change))
    assert err.value.errors[0][0] == path
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema, _ = spec_schema()
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def test_schema_accepts_the_settings(validator):
    for change in ({"schedule": None}, {"schedule": {"type": "constant"}}, {"schedule": {"type": "cosine", "warmup_steps": 5}},
                   {"schedule": {"type": "onecycle", "max_lr": 0.01, "three_phase": True}}, {"label_smoothing": 0.1, "clip_grad_norm": 2.5},
                   {"clip_grad_norm": None}, {"optimizer": {"type": "adamw", "weight_decay": 0.05}}):
        spec = spec_with(**change)
        assert list(validator.iter_errors(spec)) == [], change
        cnnkit.validate_spec(spec)


@pytest.mark.parametrize("change, path, fragment", [
    ({"schedule": {"type": "cosine", "warmup": 3}}, "$.train.schedule", "'warmup' was unexpected"),
    ({"schedule": {"type": "onecycle"}}, "$.train.schedule", "'max_lr' is a required property"),
    ({"schedule": {"type": "cosin"}}, "$.train.schedule.type", "'cosin' is not one of"),
    ({"schedule": {"type": "step", "step_size": 0}}, "$.train.schedule.step_size", "less than or equal to the minimum of 0"),
    ({"schedule": "cosine"}, "$.train.schedule", "is not of type 'object', 'null'"),
    ({"label_smoothing": 1}, "$.train.label_smoothing", "greater than or equal to the maximum"),
    ({"clip_grad_norm": 0}, "$.train.clip_grad_norm", "not valid"),
    ({"optimizer": {"type": "adamw", "nesterov": True}}, "$.train.optimizer", "'nesterov' was unexpected"),
])
def test_schema_rejects_what_validation_rejects(validator, change, path, fragment):
    spec = spec_with(**change)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(spec)]
    assert any(e.startswith(path + ":") and fragment in e for e in errors), errors
    with pytest.raises(cnnkit.SpecError):
        cnnkit.validate_spec(spec)


# --------------------------------------------------------------------------------------------------
# The training loop


def test_schedule_is_stepped_per_batch_and_the_lr_recorded_per_epoch():
    data = tiny_data()  # 240 examples at batch 16: 15 optimizer steps per epoch
    epochs = []
    model = cnnkit.train(spec_with(epochs=3, schedule={"type": "step", "step_size": 15, "gamma": 0.5}), data, on_epoch=epochs.append)
    assert [r.lr for r in epochs] == [0.1, 0.05, 0.025]
    assert [r["lr"] for r in model.metadata["history"]] == [0.1, 0.05, 0.025]
    epochs.clear()
    cnnkit.train(spec_with(epochs=2, schedule={"type": "step", "step_size": 14, "gamma": 0.5}), data, on_epoch=epochs.append)
    assert [r.lr for r in epochs] == [0.05, 0.025]  # steps 14 and 29: counted in batches, not epochs


def test_run_length_reaches_the_schedule():
    """Without total_steps in the spec, the length is epochs * batches per epoch (a partial last batch counts)."""
    data = tiny_data(train=250)  # ceil(250 / 16) = 16 steps per epoch
    epochs = []
    model = cnnkit.train(spec_with(epochs=2, schedule={"type": "onecycle", "max_lr": 0.1}), data, on_epoch=epochs.append)
    expected = build_schedule(model.spec.train.schedule, 0.1, 32)
    assert epochs[0].lr == pytest.approx(expected.lr(15)) and epochs[1].lr == pytest.approx(0.1 / 25 / 1e4)
    epochs.clear()
    cnnkit.train(spec_with(epochs=2, schedule={"type": "cosine", "warmup_steps": 4, "min_lr": 0.001}), data, on_epoch=epochs.append)
    cosine = [0.001 + 0.099 * (1 + math.cos(math.pi * done / 28)) / 2 for done in (11, 27)]  # steps 15 and 31, after 4 of warm-up
    assert [r.lr for r in epochs] == pytest.approx(cosine)


def test_settings_train_well_and_deterministically():
    data = tiny_data()
    spec = spec_with(epochs=3, optimizer={"type": "adamw", "lr": 0.01}, schedule={"type": "cosine", "warmup_steps": 10},
                     label_smoothing=0.1, clip_grad_norm=1.0)
    a, b = cnnkit.train(spec, data), cnnkit.train(spec, data)
    assert a.metadata == b.metadata and a.metadata["metrics"]["test_accuracy"] > 0.9
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name])


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_each_setting_changes_training_and_defaults_change_nothing():
    data = tiny_data()
    base = cnnkit.train(spec_with(epochs=1), data)
    same = cnnkit.train(spec_with(epochs=1, schedule={"type": "constant"}, label_smoothing=0.0, clip_grad_norm=1e9), data)
    for name in base.weights:
        np.testing.assert_array_equal(base.weights[name], same.weights[name])
    for change in ({"label_smoothing": 0.2}, {"clip_grad_norm": 0.01}, {"schedule": {"type": "step", "step_size": 3}}):
        other = cnnkit.train(spec_with(epochs=1, **change), data)
        assert any(not np.array_equal(base.weights[n], other.weights[n]) for n in base.weights), change


def test_a_warmup_longer_than_the_run_is_a_one_line_error(tmp_path, synthetic_dir):
    """The run's length is only known with the data; the error still names the path, and no bundle is written."""
    spec = spec_with(epochs=1, schedule={"type": "cosine", "warmup_steps": 1000})
    spec["data"] = {"dataset": "fashion-mnist", "dir": str(synthetic_dir)}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "s.json"), "--out", str(tmp_path / "m.cnnkit")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: train.schedule.warmup_steps: must be less than the total length (15 optimizer steps) so the cosine has steps to run. Received: 1000"]
    assert not (tmp_path / "m.cnnkit").exists()
