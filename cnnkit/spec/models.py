"""Model specs: JSON in, a frozen ModelSpec out, resolved once, with every error pinned to its JSON path.

Validation checks the outline first (a name, an input, a list of layers, the sections as maps), then
resolves each part once: the data source and its params, the optimizer and schedule (sections.py),
and every layer with its params and shapes (layers.py). The ModelSpec holds the results, typed; the
Model, the trainer, the data loaders, ``save`` and the exporters all take it and validate nothing again.
"""

from __future__ import annotations

import copy
import re
import threading
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, ValidationInfo, field_validator

from ..errors import SpecError
from ..params import StrictParams
from .files import apply_overrides, check_json, read_spec_file
from .layers import ResolvedLayer, resolve_layers
from .predict import PredictSpec, check_predict
from .problems import Problems, pydantic_problems
from .sections import DataSpec, TrainSpec, resolve_data, resolve_train
from .training import OPTIONAL_KEYS

# The model name names a file (README "The spec format"); file-level limits live in files.py.
MAX_NAME_LENGTH = 100
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


class Preprocess(StrictParams):
    """Applied to raw pixel values before the first layer: x / divide - subtract (the seed's x/255 - 0.5)."""

    divide: PositiveFloat = 255.0
    subtract: float = 0.5


class InputSpec(StrictParams):
    shape: list[PositiveInt] = Field(min_length=1, max_length=3, description="per-sample shape, e.g. [1, 28, 28] (C, H, W)")
    preprocess: Preprocess = Preprocess()


class SpecOutline(StrictParams):
    """The top level of a spec's JSON, checked before any part is resolved; ``data`` and ``train`` are
    resolved by their own models (sections.py). The JSON Schema describes the same document (schema.py)."""

    schema_: str | None = Field(None, alias="$schema", description="optional JSON Schema reference for editors")
    name: str = Field("model", description="names the default bundle file: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                      json_schema_extra={"pattern": f"^{NAME_PATTERN.pattern}$", "maxLength": MAX_NAME_LENGTH})
    input: InputSpec
    layers: list[dict[str, Any]] = Field(min_length=1)
    data: Any = Field(default_factory=dict, description="checked by DataSpec when resolved")
    train: Any = Field(default_factory=dict, description="checked by TrainSpec when resolved")
    predict: PredictSpec = Field(default_factory=PredictSpec, description="how the model predicts (test-time augmentation); kept in the bundle")

    @field_validator("name")
    @classmethod
    def _safe_file_name(cls, name: str, info: ValidationInfo) -> str:
        # Bundles written before the rule keep loading: their name names no file any more.
        if not NAME_PATTERN.fullmatch(name) and not (info.context or {}).get("from_bundle"):
            raise ValueError(f"name must be 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit (it names the bundle file)")
        return name


class ModelSpec:
    """A validated spec, resolved once and frozen: what Model, the trainer, the data loaders, ``save``
    and the exporters take.

    ``name``; ``input`` (``shape``, ``preprocess``); ``layers``, a ResolvedLayer each (the layer object,
    its provider, its input and output shapes); ``predict`` (test-time augmentation); ``data`` (a DataSpec: ``data.source`` is the source's
    typed params); ``train`` (a TrainSpec: ``train.optimizer`` and ``train.schedule`` are typed params);
    ``to_dict()``, the JSON form with every default filled in that run folders and bundles store.

    ``validate_spec`` makes one with everything resolved. A spec read from a bundle resolves only what
    inference needs (input, preprocessing, layers, predict); its ``data`` and ``train`` are resolved when first
    asked for, so a bundle whose training section another cnnkit version wrote still predicts, and
    ``to_dict()`` gives those sections back as the bundle holds them.
    """

    _resolving = threading.Lock()  # a bundle's section asked for by several threads at once is resolved once

    def __init__(self, document: dict[str, Any], input: InputSpec, layers: tuple[ResolvedLayer, ...], predict: PredictSpec,
                 data: DataSpec | None, train: TrainSpec | None):
        for key, value in (("_document", document), ("name", document["name"]), ("input", input), ("layers", layers), ("predict", predict),
                           ("_data", data), ("_train", train)):
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"a ModelSpec is frozen: validate a changed dict instead (cnnkit.validate_spec({{**spec.to_dict(), ...}})). Received: {key}=...")

    @property
    def data(self) -> DataSpec:
        """The ``data`` section, resolved (a bundle's: when first asked for)."""
        if self._data is None:
            with self._resolving:
                if self._data is None:
                    object.__setattr__(self, "_data", _resolved(resolve_data, self._document.get("data", {}), tuple(self.input.shape)))
        return self._data

    @property
    def train(self) -> TrainSpec:
        """The ``train`` section, resolved (a bundle's: when first asked for)."""
        if self._train is None:
            with self._resolving:
                if self._train is None:
                    object.__setattr__(self, "_train", _resolved(resolve_train, self._document.get("train", {}), _has_validation(self._document)))
        return self._train

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].output_shape

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (defaults filled in, unset OPTIONAL_KEYS left out), the form stored in bundles."""
        return copy.deepcopy(self._document)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelSpec) and other._document == self._document

    __hash__ = None  # equal specs say the same; a spec is not a dict key

    def __repr__(self) -> str:
        return f"ModelSpec(name={self.name!r}, input={self.input.shape}, layers={len(self.layers)})"


def _resolved(resolve, raw: Any, context: Any) -> Any:
    errors: Problems = []
    section = resolve(raw, context, errors)
    if errors:
        raise SpecError(errors)
    return section


def _has_validation(document: dict[str, Any]) -> bool:
    """Whether the spec holds out a validation split (what early stopping and restore_best need)."""
    data = document.get("data", {})
    return isinstance(data, dict) and data.get("validation") is not None


def _dump(section: DataSpec | TrainSpec, name: str) -> dict[str, Any]:
    out = section.model_dump(mode="json")
    for key in OPTIONAL_KEYS[name]:
        if out.get(key) is None:
            out.pop(key, None)
    return out


def validate_spec(data: Any, *, from_bundle: bool = False) -> ModelSpec:
    """Validate and resolve a parsed spec (a dict): every part, layer params and shapes. Raises SpecError.

    ``from_bundle`` (a spec embedded in a bundle) resolves what inference needs only (input,
    preprocessing, layers, predict; ``data`` and ``train`` when first asked for) and skips the
    file-name rule for ``name``. Any other top-level key is an error there too: a newer writer's key
    may change what the model computes (docs/FORMAT.md, Versioning).
    """
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a JSON object. Received: {type(data).__name__}")
    check_json(data)
    errors: Problems = []
    try:
        # A bundle's data and train sections are kept as they are, unread: inference needs neither.
        outline = SpecOutline.model_validate({k: v for k, v in data.items() if k not in ("data", "train")} if from_bundle else data,
                                             context={"from_bundle": from_bundle})
    except ValidationError as exc:
        outline = None
        errors.extend(pydantic_problems(exc, SpecOutline, ()))
    shape = tuple(outline.input.shape) if outline is not None else None
    sections = {}
    if not from_bundle:
        sections["data"] = resolve_data(data.get("data", {}), shape, errors)
        sections["train"] = resolve_train(data.get("train", {}), _has_validation(data), errors)
    layers = resolve_layers(outline.layers, shape, errors) if outline is not None else ()
    if outline is not None:
        check_predict(outline.predict, shape, errors)
    if errors:
        raise SpecError(errors)
    layer_dicts = [r.to_dict() for r in layers]
    if from_bundle:
        document = {**copy.deepcopy(data), "name": outline.name, "input": outline.input.model_dump(mode="json"), "layers": layer_dicts}
    else:
        document = {"name": outline.name, "input": outline.input.model_dump(mode="json"), "layers": layer_dicts,
                    "data": _dump(sections["data"], "data"), "train": _dump(sections["train"], "train")}
    document.pop("predict", None)
    if outline.predict.tta:  # stored only when set, like OPTIONAL_KEYS: bundles without it keep their bytes
        document["predict"] = outline.predict.model_dump(mode="json")
    return ModelSpec(document, outline.input, layers, outline.predict, sections.get("data"), sections.get("train"))


def validate_data(data: DataSpec | dict[str, Any]) -> DataSpec:
    """A ``data`` section (a dict or a DataSpec) resolved: its source found, its params validated and filled in."""
    return _resolved(resolve_data, data, None)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ModelSpec:
    """Read, override and validate a spec file."""
    return validate_spec(apply_overrides(read_spec_file(path), overrides or []))
