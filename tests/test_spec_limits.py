"""Specs are bounded and every number in them is finite (issue 10: "Unbounded input", non-finite numbers).

Each bad spec gives one SpecError (one line through the CLI) naming the JSON path, before any training.
"""

from __future__ import annotations

import copy
import json
import os
import threading

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cnnkit.plugins import registry
from cnnkit.cli import app
from cnnkit.errors import SpecError
from cnnkit.optim import OPTIMIZERS
from cnnkit.spec import MAX_LAYERS, MAX_NESTING, MAX_SPEC_BYTES, load_spec, read_spec_file, validate_spec
from conftest import SEED_SPEC, TINY_SPEC

runner = CliRunner()


def seed() -> dict:
    return json.loads(SEED_SPEC.read_text())


def spec_error(tmp_path, text: str, *overrides: str) -> str:
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message and "RecursionError" not in message
    return message


# -- non-finite numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["input"].setdefault("preprocess", {}).update(divide=float("inf")), "input.preprocess.divide"),
        (lambda d: d["input"].setdefault("preprocess", {}).update(subtract=float("nan")), "input.preprocess.subtract"),
        (lambda d: d["train"].update(optimizer={"type": "adam", "lr": 0.001, "eps": float("inf")}), "train.optimizer.eps"),
        (lambda d: d["train"]["optimizer"].update(lr=float("inf")), "train.optimizer.lr"),
        (lambda d: d["layers"][0].update(init_std=float("inf")), "layers[0].init_std"),
    ],
)
def test_non_finite_numbers_in_a_spec_file_are_refused_at_their_path(tmp_path, edit, where):
    data = copy.deepcopy(TINY_SPEC)
    edit(data)
    message = spec_error(tmp_path, json.dumps(data))  # json writes NaN / Infinity, as a careless tool would
    assert message.startswith(f"{where}: input should be a finite number"), message
    assert "lr" not in message.replace("train.optimizer.lr", "") or where.endswith("lr")


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_in_set_are_refused(tmp_path, value):
    message = spec_error(tmp_path, json.dumps(TINY_SPEC), f"train.optimizer.lr={value}")
    assert message.startswith("train.optimizer.lr: input should be a finite number"), message
    nested = spec_error(tmp_path, json.dumps(TINY_SPEC), f'input.preprocess={{"divide": {value}}}')
    assert nested.startswith("input.preprocess.divide: input should be a finite number"), nested


def test_validate_command_refuses_infinite_lr(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(TINY_SPEC))
    result = runner.invoke(app, ["validate", str(tmp_path / "s.json"), "--set", "train.optimizer.lr=Infinity"])
    assert result.exit_code == 1 and result.stderr.startswith("error: train.optimizer.lr: input should be a finite number")


def test_param_models_refuse_non_finite_floats_themselves():
    # For specs built in Python and for plugins: the strict base configs forbid inf and NaN.
    with pytest.raises(ValidationError, match="finite"):
        registry.load("conv2d").Params(filters=2, kernel_size=3, init_std=float("inf"))
    for kind, params in OPTIMIZERS.items():
        with pytest.raises(ValidationError, match="finite"):
            params.Params(type=kind, lr=float("nan"))
    from cnnkit.spec import Preprocess

    with pytest.raises(ValidationError, match="finite"):
        Preprocess(divide=float("inf"))


# -- duplicate keys --------------------------------------------------------------------------------


def test_duplicate_keys_are_an_error_naming_the_path(tmp_path):
    text = json.dumps(TINY_SPEC).replace('"lr": 0.1', '"lr": 0.1, "lr": 5')
    assert spec_error(tmp_path, text).startswith("train.optimizer.lr: the key appears more than once")
    text = json.dumps(TINY_SPEC).replace('"name": "tiny"', '"name": "tiny", "name": "other"')
    assert spec_error(tmp_path, text).startswith("name: the key appears more than once")
    message = spec_error(tmp_path, json.dumps(TINY_SPEC), 'layers[0]={"type": "relu", "type": "conv2d"}')
    assert message.startswith("layers[0].type: the key appears more than once"), message


# -- size, kind of file, nesting, layer count ------------------------------------------------------


def test_spec_file_over_the_size_cap_is_refused_without_parsing(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * MAX_SPEC_BYTES + b"{}")
    with pytest.raises(SpecError, match=f"more than a spec file may have \\({MAX_SPEC_BYTES:,}\\)"):
        read_spec_file(path)


def test_fifo_as_spec_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    # A writer that would feed a blocking reader: if the spec reader opened the FIFO normally, it
    # would get '{}' and fail later with a message that does not name the FIFO.
    feeder = threading.Thread(target=lambda: fifo.write_text("{}"), daemon=True)
    feeder.start()
    result = runner.invoke(app, ["validate", str(fifo)])
    release = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the feeder's open() return
    feeder.join()
    os.close(release)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {fifo} is a FIFO (named pipe), not a spec file"


def test_deep_nesting_is_a_clear_error(tmp_path):
    for depth in (MAX_NESTING + 5, 100_000):
        message = spec_error(tmp_path, "[" * depth + "]" * depth)
        assert f"nested deeper than {MAX_NESTING} levels" in message, message
    deep = '{"name": "x", "input": {"shape": [1]}, "layers": [{"type": "relu", "a": ' + "[" * 40 + "]" * 40 + "}]}"
    assert spec_error(tmp_path, deep).startswith(f"layers[0].a{'[0]' * (MAX_NESTING - 2)}: nested deeper")
    assert "nested deeper" in spec_error(tmp_path, json.dumps(TINY_SPEC), "train.x=" + "[" * 100_000 + "]" * 100_000)


def test_layer_count_is_capped(tmp_path):
    data = dict(TINY_SPEC, layers=[{"type": "relu"}] * (MAX_LAYERS + 1))
    message = spec_error(tmp_path, json.dumps(data))
    assert message == f"layers: at most {MAX_LAYERS} layers are allowed. Received: {MAX_LAYERS + 1:,} layers"
    with pytest.raises(SpecError, match="at most"):
        validate_spec(dict(TINY_SPEC, layers=[{"type": "relu"}] * 3_000_000))


def test_huge_integer_literal_is_a_spec_error(tmp_path):
    assert "malformed JSON" in spec_error(tmp_path, '{"name": ' + "9" * 5000 + "}")


# -- name ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a\u0000b", "x" * 300, "../escape", "", ".hidden", "-dash", "with space", "ünï"])
def test_name_is_a_safe_file_name(name):
    with pytest.raises(SpecError, match="^name: name must be 1-100 letters"):
        validate_spec(dict(TINY_SPEC, name=name))


def test_bundles_written_before_the_name_rule_still_load(tmp_path, tiny_spec):
    import cnnkit
    from cnnkit import bundle

    model = cnnkit.build(tiny_spec)
    payload = bundle.decode(bundle.encode(model))
    old = dict(payload.spec, name="my net/v1")  # legal before names became file names
    data = bundle.pack({"spec": old, "classes": payload.classes, "providers": payload.providers, "training": payload.training,
                        "weights": {n: bundle.weight_entry(n, w) for n, w in payload.weights.items()}})
    (tmp_path / "old.cnnkit").write_bytes(data)
    assert cnnkit.load(tmp_path / "old.cnnkit").spec.name == "my net/v1"


def test_good_names_pass():
    for name in ("tiny", "fashion-mnist-seed", "v1.2_final", "A" * 100):
        assert validate_spec(dict(TINY_SPEC, name=name)).name == name


# -- memory ----------------------------------------------------------------------------------------


def test_summary_shows_memory_per_image(tmp_path):
    result = runner.invoke(app, ["summary", str(SEED_SPEC)])
    assert result.exit_code == 0
    assert "estimated memory per image: training" in result.stdout and "inference" in result.stdout
    data = seed()
    data["input"]["shape"] = [1, 4096, 4096]
    data["layers"] = [{"type": "conv2d", "filters": 6, "kernel_size": 5, "padding": "same"}, {"type": "flatten"}, {"type": "dense", "units": 10}]
    (tmp_path / "huge.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["summary", str(tmp_path / "huge.json"), "--json"])
    memory = json.loads(result.stdout)["memory"]
    # (1 + 6 + 25 unfolded) values per pixel of 16.8 M pixels: about 2 GB per image in inference.
    assert 1.5e9 < memory["inference_bytes_per_image"] < 3e9
    assert memory["train_bytes_per_image"] > memory["inference_bytes_per_image"]
