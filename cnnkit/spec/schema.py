"""JSON Schema (draft-07) of a model spec, including every installed layer type's params.

Editors such as VS Code read draft-07; pydantic writes 2020-12 style (``$defs``, ``prefixItems``),
so the pieces pydantic generates are converted here. Layers are discriminated on ``type``: an
``enum`` of the installed types plus one ``if``/``then`` per type, so an editor reports "unknown
layer type" or "unknown field" at the right place. A layer type that cannot be loaded is left out
and reported to the caller; it never stops the schema from being built.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ..data.sources import DATASETS
from ..optim import OPTIMIZERS, SCHEDULES
from ..plugins import registry
from .models import SpecOutline
from .sections import DataSpec, TrainSpec

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
DEFAULT_DATASET = DataSpec.model_fields["dataset"].default
SCHEMA_ID = "https://cnnkit.invalid/spec.schema.json"  # a name, not an address: nothing is fetched from it


def to_draft07(schema: Any) -> Any:
    """Rewrite a pydantic (2020-12 style) schema fragment into draft-07 terms, recursively."""
    if isinstance(schema, list):
        return [to_draft07(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$defs":
            out["definitions"] = {name: to_draft07(s) for name, s in value.items()}
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/$defs/", "#/definitions/")
        elif key == "prefixItems":  # tuple-shaped arrays: draft-07 spells them as an items list
            out["items"] = to_draft07(value)
            if "items" not in schema:
                out["additionalItems"] = False
        elif key == "items" and "prefixItems" in schema:
            out["additionalItems"] = to_draft07(value)
        elif key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: to_draft07(s) for name, s in value.items()}
        elif key in ("dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "$anchor", "$dynamicRef"):
            raise ValueError(f"schema keyword {key!r} has no draft-07 equivalent")
        elif key in ("default", "const", "enum", "examples"):
            out[key] = value  # literal JSON values, not subschemas
        else:
            out[key] = to_draft07(value)
    # A $ref in draft-07 makes its siblings ignored; wrap it so a description or default survives.
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


# The document the schema describes: the outline with its sections' own models.
class _Document(SpecOutline):
    """A whole model: architecture, input, data and training settings. Layers hold normalized params."""

    model_config = ConfigDict(title="ModelSpec")

    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return to_draft07(model.model_json_schema(by_alias=True, mode="validation"))


def params_schema(cls: type) -> dict[str, Any]:
    """Draft-07 schema of one layer class's params, with the ``type`` key allowed (its own ``$defs`` inlined as definitions)."""
    schema = _model_schema(cls.Params)
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def _discriminated(kind_schemas: dict[str, dict[str, Any]], description: str) -> dict[str, Any]:
    """An object with a required ``type`` from ``kind_schemas`` and, per type, that type's fields only."""
    branches = []
    for kind, schema in kind_schemas.items():
        then = {k: v for k, v in schema.items() if k not in ("definitions", "description")}
        then["properties"] = {"type": {"const": kind}, **{k: v for k, v in then.get("properties", {}).items() if k != "type"}}
        then["additionalProperties"] = False
        branches.append({"if": {"properties": {"type": {"const": kind}}, "required": ["type"]}, "then": then})
    return {
        "type": "object",
        "description": description,
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": list(kind_schemas)}},
        "allOf": branches,
    }


def _data_schema(data: dict[str, Any], sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``data``: the general keys, and per ``dataset`` (fashion-mnist when absent) that source's params beside them."""
    general = {k: v for k, v in data.get("properties", {}).items() if k != "dataset"}
    dataset = {**data["properties"]["dataset"], "enum": list(sources)}
    branches = []
    for name, params in sources.items():
        then: dict[str, Any] = {"properties": {"dataset": {"const": name}, **general, **params.get("properties", {})}, "additionalProperties": False}
        if params.get("required"):
            then["required"] = params["required"]
        condition: dict[str, Any] = {"properties": {"dataset": {"const": name}}}
        if name != DEFAULT_DATASET:  # an absent dataset means the default, so only its branch applies then
            condition["required"] = ["dataset"]
        branches.append({"if": condition, "then": then})
    description = "where the examples come from: 'dataset' names a source (cnnkit datasets lists them); its params sit beside it, with the general keys"
    return {"type": "object", "description": description, "properties": {"dataset": dataset, **general}, "allOf": branches}


def _hoist_definitions(schemas: dict[str, dict[str, Any]], into: dict[str, Any]) -> None:
    """Move each sub-schema's own definitions to the root; refs inside point at #/definitions already."""
    for schema in schemas.values():
        for name, definition in schema.pop("definitions", {}).items():
            if name in into and into[name] != definition:
                raise ValueError(f"two schemas define {name!r} differently")
            into[name] = definition


def spec_schema() -> tuple[dict[str, Any], list[registry.LayerStatus]]:
    """The spec's draft-07 schema, and the layer types and dataset sources left out of it (each with its error)."""
    schema = _model_schema(_Document)
    definitions = schema.setdefault("definitions", {})
    for base in ("OptimizerParams", "ScheduleParams"):  # the typed fields' bases: replaced below by each type's own fields
        definitions.pop(base, None)
    usable = {}
    skipped = []
    for status in registry.load_all():
        if status.cls is None:
            skipped.append(status)
        else:  # every plugin type by its qualified name; the plain name where it is unambiguous
            if not status.entry.builtin:
                usable[status.entry.qualified] = params_schema(status.cls)
            if status.conflict is None:
                usable[status.entry.type] = params_schema(status.cls)
    _hoist_definitions(usable, definitions)
    optimizers = {kind: _model_schema(cls.Params) for kind, cls in OPTIMIZERS.items()}
    _hoist_definitions(optimizers, definitions)
    schedules = {kind: _model_schema(cls.Params) for kind, cls in SCHEDULES.items()}
    _hoist_definitions(schedules, definitions)
    sources = {}
    for status in DATASETS.load_all():
        if status.cls is None:
            skipped.append(status)
        else:
            if not status.entry.builtin:
                sources[status.entry.qualified] = params_schema(status.cls)
            if status.conflict is None:
                sources[status.entry.type] = params_schema(status.cls)
    _hoist_definitions(sources, definitions)
    definitions["DataSpec"] = _data_schema(definitions["DataSpec"], sources)

    schema["properties"]["layers"]["items"] = _discriminated(usable, "one layer: 'type' names an installed layer type (cnnkit layers lists them)")
    train = definitions["TrainSpec"]["properties"]
    optimizer = _discriminated(optimizers, "'type' is one of: " + ", ".join(optimizers))
    optimizer["default"] = train["optimizer"].get("default", {"type": "sgd", "lr": 0.01})
    train["optimizer"] = optimizer
    # null (constant lr) or a schedule; the branches' conditions also require an object, so a null skips them.
    schedule = _discriminated(schedules, train["schedule"].get("description", ""))
    schedule["type"] = ["object", "null"]
    for branch in schedule["allOf"]:
        branch["if"]["type"] = "object"
    schedule["default"] = None
    train["schedule"] = schedule
    return {"$schema": DRAFT_07, "$id": SCHEMA_ID, **schema}, skipped


# --------------------------------------------------------------------------------------------------
# Human-readable parameter descriptions (for `cnnkit layers`)


def describe_type(schema: dict[str, Any]) -> str:
    """A short text for one property schema: 'integer > 0', "'same' | 'valid' | integer", ..."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(describe_type(s) for s in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return describe_type(schema["allOf"][0])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    text = schema.get("type", "any")
    if text == "array" and isinstance(schema.get("items"), dict):
        text = f"list[{describe_type(schema['items'])}]"
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<="))
        if key in schema
    ]
    return f"{text} {', '.join(bounds)}" if bounds else text


def describe_params(cls: type) -> list[dict[str, Any]]:
    """One row per param of a layer class: name, type text, required, default, description."""
    schema = params_schema(cls)
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema["properties"].items():
        row = {"name": name, "type": describe_type(prop), "required": name in required}
        if "default" in prop:
            row["default"] = prop["default"]
        if "description" in prop:
            row["description"] = prop["description"]
        rows.append(row)
    return rows
