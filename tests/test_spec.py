"""Spec validation: every error names its JSON path, what was expected and what was received."""

from __future__ import annotations

import json

import pytest

from cnnkit import SpecError, load_spec, validate_spec
from cnnkit.spec import apply_overrides, parameter_count, read_spec_file
from conftest import SEED_SPEC, TINY_SPEC


def seed() -> dict:
    return json.loads(SEED_SPEC.read_text())


def error_of(data) -> SpecError:
    with pytest.raises(SpecError) as info:
        validate_spec(data)
    return info.value


def changed(edit) -> dict:
    data = seed()
    edit(data)
    return data


def test_seed_spec_validates_with_12832_parameters():
    spec = load_spec(SEED_SPEC)
    resolved = spec.layers
    assert [r.type for r in resolved] == ["conv2d", "relu", "conv2d", "relu", "maxpool2d", "flatten", "dense", "softmax"]
    assert sum(parameter_count(resolved)) == 12_832
    assert resolved[5].output_shape == (6 * 14 * 14,)
    assert resolved[-1].output_shape == (10,)
    assert (spec.train.epochs, spec.train.batch_size, spec.train.optimizer.lr) == (3, 1, 0.005)


def test_dense_input_size_is_inferred_not_written():
    spec = validate_spec(seed())
    dense = spec.layers[6]
    assert dense.input_shape == (1176,)
    assert dense.layer.weights(dense.input_shape)  # shapes come from the inferred input
    assert "in_features" not in spec.to_dict()["layers"][6] and spec.layers[6].params.units == 10


def test_validated_spec_normalizes_layer_params_with_defaults():
    spec = validate_spec(seed())
    assert spec.layers[0].params.stride == 1 and spec.layers[0].params.padding == "same"
    assert spec.to_dict()["layers"][0]["padding"] == "same"
    assert (spec.train.optimizer.type, spec.train.optimizer.lr, spec.train.optimizer.momentum) == ("sgd", 0.005, 0.0)
    assert validate_spec(spec.to_dict()).to_dict() == spec.to_dict()  # what bundles store re-validates


@pytest.mark.parametrize(
    "edit, path, fragments",
    [
        (lambda d: d["layers"][0].update(kernel_size="5"), "layers[0].kernel_size", ["integer", 'Received: "5"']),
        (lambda d: d["layers"][2].update(kernel_size=True), "layers[2].kernel_size", ["integer", "Received: true"]),
        (lambda d: d["layers"][0].update(kernel_size=5.0), "layers[0].kernel_size", ["integer", "Received: 5.0"]),
        (lambda d: d["layers"][0].update(kernel_size=[5, 5]), "layers[0].kernel_size", ["integer", "Received: [5, 5]"]),
        (lambda d: d["train"].update(epochs=True), "train.epochs", ["integer", "Received: true"]),
        (lambda d: d["train"].update(epochs=0), "train.epochs", ["greater than 0", "Received: 0"]),
        (lambda d: d["train"].update(batch_size=1.0), "train.batch_size", ["integer", "Received: 1.0"]),
        (lambda d: d["input"]["preprocess"].update(divide=True), "input.preprocess.divide", ["number", "Received: true"]),
        (lambda d: d["input"].update(shape=[1, 28, False]), "input.shape[2]", ["integer", "Received: false"]),
        (lambda d: d["data"].update(train_limit=2.5), "data.train_limit", ["integer", "Received: 2.5"]),
        (lambda d: d["data"].update(dataset="mnist"), "data.dataset", ["unknown dataset 'mnist'", "known datasets: fashion-mnist"]),
        (lambda d: d.update(name=5), "name", ["string", "Received: 5"]),
        (lambda d: d["layers"][0].pop("filters"), "layers[0].filters", ["required"]),
        (lambda d: d["layers"].__setitem__(3, 7), "layers[3]", ["dictionary", "Received: 7"]),
        (lambda d: d["layers"][0].update(padding="sam"), "layers[0].padding", ["same", "valid", "sam"]),
        (lambda d: d["layers"][0].update(stride=0), "layers[0].stride", ["greater than 0", "Received: 0"]),
    ],
)
def test_wrong_field_types_and_values_name_path_expectation_and_value(edit, path, fragments):
    err = error_of(changed(edit))
    assert [p for p, _ in err.errors] == [path]
    text = str(err)
    assert text.startswith(path + ": ") and "\n" not in text
    for fragment in fragments:
        assert fragment in text


@pytest.mark.parametrize(
    "edit, path, suggestion",
    [
        (lambda d: d["layers"][0].update(kernal_size=5), "layers[0].kernal_size", "did you mean 'kernel_size'?"),
        (lambda d: d["train"].update(epoch=3), "train.epoch", "did you mean 'epochs'?"),
        (lambda d: d["train"]["optimizer"].update(lrr=0.1), "train.optimizer.lrr", "did you mean 'lr'?"),
        (lambda d: d["input"].update(preprocesss={}), "input.preprocesss", "did you mean 'preprocess'?"),
        (lambda d: d.update(trian={}), "trian", "did you mean 'train'?"),
        (lambda d: d["layers"][6].update(in_features=1176), "layers[6].in_features", "allowed: units"),
        # optional nested objects (an Optional[...] annotation): this said "this takes no fields"
        (lambda d: d.setdefault("data", {}).update(augment={"hlip": True}), "data.augment.hlip", "did you mean 'hflip'?"),
        (lambda d: d.setdefault("data", {}).update(augment={"erasing": {"scael": [0.1, 0.2]}}), "data.augment.erasing.scael", "did you mean 'scale'?"),
        (lambda d: d["train"].update(early_stopping={"patince": 2}), "train.early_stopping.patince", "did you mean 'patience'?"),
    ],
)
def test_unknown_fields_are_errors_with_did_you_mean(edit, path, suggestion):
    err = error_of(changed(edit))
    assert err.errors[0][0] == path
    assert "unknown field" in str(err) and suggestion in str(err)


def test_unknown_layer_type_gets_did_you_mean_and_the_known_types():
    err = error_of(changed(lambda d: d["layers"][4].update(type="maxpool")))
    assert err.errors[0][0] == "layers[4].type"
    assert "'maxpool'" in str(err) and "did you mean 'maxpool2d'?" in str(err) and "conv2d" in str(err)


@pytest.mark.parametrize("value", [3, None])
def test_a_layer_needs_a_string_type(value):
    err = error_of(changed(lambda d: d["layers"][1].update(type=value)))
    assert err.errors[0][0] == "layers[1].type" and f"Received: {json.dumps(value)}" in str(err)


@pytest.mark.parametrize(
    "edit, path, fragment",
    [
        (lambda d: d["layers"][2].update(kernel_size=40, padding="valid"), "layers[2]", "input_shape=[6, 28, 28]"),
        (lambda d: d["layers"][0].update(kernel_size=29, padding="valid"), "layers[0]", "input_shape=[1, 28, 28]"),
        (lambda d: d["layers"][4].update(pool_size=100), "layers[4]", "pool_size=100"),
        (lambda d: (d["input"].update(shape=[1, 8, 8]), d["layers"][0].update(padding="valid"), d["layers"][2].update(padding="valid")), "layers[2]", "input_shape=[6, 4, 4]"),
    ],
)
def test_shapes_collapsing_to_nothing_fail_at_that_layer(edit, path, fragment):
    data = changed(edit)
    err = error_of(data)
    assert [p for p, _ in err.errors] == [path]
    assert "empty" in str(err) or "larger" in str(err)
    assert fragment in str(err)


def test_layer_needing_other_input_rank_fails_at_that_layer():
    err = error_of(changed(lambda d: d["layers"].insert(2, {"type": "dense", "units": 10})))
    assert err.errors[0][0] == "layers[2]" and "flatten" in str(err)


def test_optimizer_errors_are_under_train_optimizer():
    err = error_of(changed(lambda d: d["train"]["optimizer"].update(lr="fast")))
    assert err.errors[0][0] == "train.optimizer.lr" and 'Received: "fast"' in str(err)
    err = error_of(changed(lambda d: d["train"]["optimizer"].update(lr=True)))
    assert err.errors[0][0] == "train.optimizer.lr"
    err = error_of(changed(lambda d: d["train"]["optimizer"].update(type="sdg")))
    assert err.errors[0][0] == "train.optimizer.type" and "'sgd'" in str(err) and 'Received: "sdg"' in str(err)
    err = error_of(changed(lambda d: d["train"].update(optimizer={"type": "adam", "momentum": 0.9})))
    assert err.errors[0][0] == "train.optimizer.momentum" and "unknown field" in str(err)


def test_several_problems_are_all_reported_on_one_line():
    data = changed(lambda d: (d["train"].update(epochs="x", seed=-1), d["layers"][0].update(kernal_size=5)))
    err = error_of(data)
    paths = [p for p, _ in err.errors]
    assert "train.epochs" in paths and "train.seed" in paths
    assert "\n" not in str(err)


def test_schema_key_is_accepted_and_not_stored():
    spec = validate_spec(changed(lambda d: d.update({"$schema": "./cnnkit.spec.schema.json"})))
    assert "$schema" not in spec.to_dict()


@pytest.mark.parametrize("data", [[], "spec", 3, None])
def test_a_spec_must_be_an_object(data):
    assert "JSON object" in str(error_of(data))


def test_empty_layer_list_is_an_error():
    assert error_of(changed(lambda d: d.update(layers=[]))).errors[0][0] == "layers"


# -- overrides -------------------------------------------------------------------------------------


def test_overrides_set_json_values_at_dotted_paths():
    data = apply_overrides(seed(), ["train.epochs=1", "data.train_limit=2000", "layers[0].filters=8", "layers.2.filters=4", "name=my-net"])
    spec = validate_spec(data)
    assert spec.train.epochs == 1 and spec.data.train_limit == 2000 and spec.name == "my-net"
    assert spec.layers[0].params.filters == 8 and spec.layers[2].params.filters == 4
    assert seed()["train"]["epochs"] == 3  # the input is not modified


def test_overrides_can_create_missing_objects():
    data = apply_overrides(TINY_SPEC, ["train.optimizer.momentum=0.9", "input.preprocess.subtract=0"])
    spec = validate_spec(data)
    assert spec.train.optimizer.momentum == 0.9 and spec.input.preprocess.subtract == 0.0


@pytest.mark.parametrize(
    "assignment, path, fragment",
    [
        ("train.epochs=true", "train.epochs", "Received: true"),
        ('train.epochs="1"', "train.epochs", 'Received: "1"'),
        ("train.epochs=0", "train.epochs", "greater than 0"),
        ("trian.epochs=1", "trian", "did you mean 'train'?"),
        ("layers[0].kernal_size=3", "layers[0].kernal_size", "did you mean 'kernel_size'?"),
        ("layers[0].type=conv", "layers[0].type", "did you mean 'conv2d'?"),
        ("train.optimizer.lr=-1", "train.optimizer.lr", "greater than 0"),
    ],
)
def test_overrides_are_validated_like_the_file(assignment, path, fragment):
    err = error_of(apply_overrides(seed(), [assignment]))
    assert err.errors[0][0] == path and fragment in str(err)


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("train.epochs", "PATH=VALUE"),
        ("=3", "PATH=VALUE"),
        ("train..epochs=1", "empty part"),
        ("layers[9].filters=3", "layers[9] is not an existing list item"),
        ("layers[-1].filters=3", "cannot be negative"),
        ("layers.x.filters=3", "not an existing list item"),
        ("train.epochs.x=1", "train.epochs is not an object"),
    ],
)
def test_bad_override_paths_are_one_line_errors(assignment, fragment):
    with pytest.raises(SpecError) as info:
        apply_overrides(seed(), [assignment])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_override_values_that_are_not_json_are_strings():
    assert apply_overrides(TINY_SPEC, ["name=hello"])["name"] == "hello"
    assert apply_overrides(TINY_SPEC, ["data.train_limit=null"])["data"]["train_limit"] is None


# -- files -----------------------------------------------------------------------------------------


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "layers": [\n    {"type": "relu",}\n  ]\n}\n')
    with pytest.raises(SpecError) as info:
        read_spec_file(path)
    text = str(info.value)
    assert str(path) in text and "line 4 column" in text and "\n" not in text


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"[1, 2"])
def test_unreadable_spec_files_are_spec_errors(tmp_path, content):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.json")


def test_load_spec_applies_overrides(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(TINY_SPEC))
    assert load_spec(path, ["train.epochs=7"]).train.epochs == 7
    assert load_spec(path).train.epochs == 3


def test_fields_on_a_layer_without_parameters():
    err = error_of(changed(lambda d: d["layers"][1].update(units=3)))
    assert str(err) == "layers[1].units: unknown field; this takes no fields"


@pytest.mark.parametrize(
    "override, path, message",
    [
        ("input.shape=[1, 99999999, 99999999]", "layers[0]", "values per sample"),
        ("layers[6].units=99999999999", "layers[6]", "values per sample"),
        ("layers[6].units=2000000", "layers[6]", "weight 'kernel' would have"),
    ],
)
def test_absurd_sizes_are_spec_errors_at_their_layer(override, path, message):
    # They would otherwise pass validation and fail later as an allocation error.
    with pytest.raises(SpecError) as info:
        validate_spec(apply_overrides(json.load(open(SEED_SPEC)), [override]))
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
