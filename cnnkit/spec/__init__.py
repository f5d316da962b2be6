"""Model specs: JSON files in, a validated spec out (models.py), the training section's parts
(training.py), reading files and ``--set`` overrides (files.py), the JSON Schema (schema.py)."""

from .files import MAX_LAYERS, MAX_NESTING, MAX_SPEC_BYTES, apply_overrides, check_json, json_path, parse_override, read_spec_file
from .models import DataSpec, InputSpec, ModelSpec, Preprocess, ResolvedLayer, TrainSpec, load_spec, parameter_count, resolve_layers, validate_data, validate_spec

__all__ = [
    "MAX_LAYERS", "MAX_NESTING", "MAX_SPEC_BYTES", "DataSpec", "InputSpec", "ModelSpec", "Preprocess", "ResolvedLayer", "TrainSpec",
    "apply_overrides", "check_json", "json_path", "load_spec", "parameter_count", "parse_override", "read_spec_file", "resolve_layers",
    "validate_data", "validate_spec",
]
