"""`cnnkit schema`: a draft-07 JSON Schema that accepts every example spec and rejects what pydantic rejects."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Optional

import pytest
from jsonschema import Draft7Validator
from pydantic import BaseModel
from typer.testing import CliRunner

import cnnkit
from cnnkit.plugins import registry
from cnnkit.cli import app
from cnnkit.spec.schema import describe_params, spec_schema, to_draft07

from conftest import TINY_SPEC  # the mutation tests below index into its layers
from fakeplugins import BROKEN_MODULE, SCALE_MODULE, write_dist

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").rglob("*.json"))  # specs/examples/ too


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema, skipped = spec_schema()
    Draft7Validator.check_schema(schema)
    assert skipped == []
    return Draft7Validator(schema)


def _errors(validator, spec) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(spec)]


def test_schema_is_draft07_without_2020_keywords():
    schema, _ = spec_schema()
    text = json.dumps(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    for keyword in ('"$defs"', '"prefixItems"', "#/$defs/", '"unevaluatedProperties"'):
        assert keyword not in text


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_example_spec_validates(validator, path):
    spec = json.loads(path.read_text())
    assert _errors(validator, spec) == []
    cnnkit.validate_spec(spec)  # and pydantic agrees


def test_dollar_schema_key_is_allowed(validator):
    spec = {"$schema": "./cnnkit.spec.schema.json", **TINY_SPEC}
    assert _errors(validator, spec) == []
    cnnkit.validate_spec(spec)


MISSPELLINGS = [
    ("top level", lambda s: s.update(nmae="x"), "$: Additional properties are not allowed ('nmae' was unexpected)"),
    ("layer param", lambda s: s["layers"][0].update(kernal_size=3), "$.layers[0]: Additional properties are not allowed ('kernal_size' was unexpected)"),
    ("input", lambda s: s["input"].update(shpae=[1]), "$.input: Additional properties are not allowed ('shpae' was unexpected)"),
    ("preprocess", lambda s: s["input"].update(preprocess={"divid": 255}), "$.input.preprocess: Additional properties are not allowed ('divid' was unexpected)"),
    ("data", lambda s: s["data"].update(train_limt=10), "$.data: Additional properties are not allowed ('train_limt' was unexpected)"),
    ("train", lambda s: s["train"].update(epoch=2), "$.train: Additional properties are not allowed ('epoch' was unexpected)"),
    ("optimizer", lambda s: s["train"]["optimizer"].update(lrr=0.1), "$.train.optimizer: Additional properties are not allowed ('lrr' was unexpected)"),
    ("param of another type", lambda s: s["layers"][2].update(filters=3), "$.layers[2]: Additional properties are not allowed ('filters' was unexpected)"),
    ("layer type", lambda s: s["layers"][1].update(type="reul"), "$.layers[1].type: 'reul' is not one of"),
]


@pytest.mark.parametrize("where, mutate, expected", MISSPELLINGS, ids=[m[0] for m in MISSPELLINGS])
def test_misspelled_fields_are_rejected(validator, where, mutate, expected):
    spec = copy.deepcopy(TINY_SPEC)
    mutate(spec)
    errors = _errors(validator, spec)
    assert any(e.startswith(expected) for e in errors), errors
    with pytest.raises(cnnkit.SpecError):  # the schema and the validator agree
        cnnkit.validate_spec(spec)


WRONG_TYPES = [
    ("string for int", 0, {"filters": "4"}, "'4' is not of type 'integer'"),
    ("bool for int", 0, {"filters": True}, "True is not of type 'integer'"),
    ("zero for positive", 0, {"filters": 0}, "0 is less than or equal to the minimum of 0"),
    ("float for int", 2, {"pool_size": 2.5}, "2.5 is not of type 'integer'"),
    ("bad enum", 0, {"padding": "full"}, "is not valid under any of the given schemas"),
    ("bool for bool-free number", 0, {"use_bias": "yes"}, "'yes' is not of type 'boolean'"),
]


@pytest.mark.parametrize("what, index, change, expected", WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_typed_layer_params_are_rejected(validator, what, index, change, expected):
    spec = copy.deepcopy(TINY_SPEC)
    spec["layers"][index].update(change)
    errors = _errors(validator, spec)
    assert any(expected in e and e.startswith(f"$.layers[{index}]") for e in errors), errors
    with pytest.raises(cnnkit.SpecError):
        cnnkit.validate_spec(spec)


def test_required_params_and_optimizer_types(validator):
    spec = copy.deepcopy(TINY_SPEC)
    del spec["layers"][4]["units"]
    assert any("'units' is a required property" in e for e in _errors(validator, spec))
    spec = copy.deepcopy(TINY_SPEC)
    spec["train"]["optimizer"] = {"type": "adam", "momentum": 0.9}  # momentum is SGD's
    assert any("'momentum' was unexpected" in e for e in _errors(validator, spec))
    spec["train"]["optimizer"] = {"type": "adam", "beta1": 0.8}
    assert _errors(validator, spec) == []
    spec["layers"] = []
    assert _errors(validator, spec) != []


def test_plugin_layers_are_in_the_schema_with_their_params(validator):
    layer_enum = validator.schema["properties"]["layers"]["items"]["properties"]["type"]["enum"]
    usable = [s for s in registry.load_all() if s.cls is not None]
    # Plain names where unambiguous, and every plugin type qualified as well.
    assert set(layer_enum) == {s.entry.type for s in usable if s.conflict is None} | {s.entry.qualified for s in usable if not s.entry.builtin}
    if "leaky_relu" in layer_enum:
        spec = copy.deepcopy(TINY_SPEC)
        spec["layers"][1] = {"type": "leaky_relu", "negative_slope": -0.5}
        assert any("less than the minimum of 0" in e for e in _errors(validator, spec))


def test_broken_plugin_is_left_out_with_a_note(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.LAYERS, "_resolved", {})
    write_dist(tmp_path, "fake-broken-schema", "0.1", {"broken_schema": "fake_broken_schema:Broken"}, {"fake_broken_schema": BROKEN_MODULE})
    write_dist(tmp_path, "fake-scale-schema", "0.1", {"scale_schema": "fake_scale_schema:Scale"}, {"fake_scale_schema": SCALE_MODULE})
    schema, skipped = spec_schema()
    assert [s.entry.type for s in skipped] == ["broken_schema"]
    assert "deliberately broken" in skipped[0].error
    enum = schema["properties"]["layers"]["items"]["properties"]["type"]["enum"]
    assert "scale_schema" in enum and "broken_schema" not in enum
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert "note: layer type 'broken_schema' left out of the schema" in result.stderr
    assert "broken_schema" not in result.stdout and "scale_schema" in result.stdout
    for name in ("fake_broken_schema", "fake_scale_schema"):
        sys.modules.pop(name, None)


def test_cli_writes_the_schema_to_a_file(tmp_path, validator):
    out = tmp_path / "cnnkit.spec.schema.json"
    result = CliRunner().invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == validator.schema


def test_to_draft07_converts_tuples_refs_and_defs():
    class Inner(BaseModel):
        a: int

    class Outer(BaseModel):
        pair: tuple[int, str]
        many: tuple[int, ...]
        inner: Inner = Inner(a=1)
        maybe: Optional[Inner] = None

    schema = to_draft07(Outer.model_json_schema())
    Draft7Validator.check_schema(schema)
    assert "definitions" in schema and "$defs" not in schema
    assert schema["properties"]["pair"]["items"] == [{"type": "integer"}, {"type": "string"}]
    assert schema["properties"]["pair"]["additionalItems"] is False
    assert schema["properties"]["inner"]["allOf"] == [{"$ref": "#/definitions/Inner"}]  # default kept beside the ref
    v = Draft7Validator(schema)
    assert v.is_valid({"pair": [1, "x"], "many": [1, 2, 3]})
    assert not v.is_valid({"pair": [1, "x", 3], "many": []})
    assert not v.is_valid({"pair": [1, "x"], "many": [], "inner": {"a": "no"}})


def test_describe_params_for_listing():
    rows = {r["name"]: r for r in describe_params(registry.load("conv2d"))}
    assert rows["filters"] == {"name": "filters", "type": "integer > 0", "required": True}
    assert rows["padding"]["type"] == "'same' | 'valid' | integer >= 0" and rows["padding"]["default"] == "valid"
    assert rows["use_bias"]["default"] is True
