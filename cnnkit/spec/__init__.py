"""Model specs: JSON files in, a validated and resolved ModelSpec out (models.py), its layers
(layers.py), its data and train sections (sections.py, training.py), error messages (problems.py),
reading files and ``--set`` overrides (files.py), the JSON Schema (schema.py)."""

from .files import MAX_LAYERS, MAX_NESTING, MAX_SPEC_BYTES, apply_overrides, check_json, json_path, parse_override, read_spec_file
from .layers import ResolvedLayer, parameter_count
from .models import InputSpec, ModelSpec, Preprocess, load_spec, validate_data, validate_spec
from .sections import DataSpec, TrainSpec

__all__ = [
    "MAX_LAYERS", "MAX_NESTING", "MAX_SPEC_BYTES", "DataSpec", "InputSpec", "ModelSpec", "Preprocess", "ResolvedLayer", "TrainSpec",
    "apply_overrides", "check_json", "json_path", "load_spec", "parameter_count", "parse_override", "read_spec_file",
    "validate_data", "validate_spec",
]
