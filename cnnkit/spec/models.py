"""Model specs: JSON in, a validated ModelSpec out, with every error pinned to its JSON path.

Validation has two phases. Phase one checks the fixed structure (input, data, train, and that each
layer has a string ``type``). Phase two resolves each layer type through the registry, validates its
params with the layer's own pydantic model, and infers shapes layer by layer, so an impossible
network fails at the layer that makes it impossible (``layers[4]``) before any array is allocated.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, ValidationInfo, field_validator, model_serializer

from ..plugins import registry
from ..plugins.contract import declared_output_shape
from ..data.sources import DATASETS
from ..errors import RegistryError, SpecError
from ..layers.base import Layer, Shape
from ..layers.legacy import adapt
from ..optim import OPTIMIZERS, SCHEDULES
from .training import OPTIONAL_KEYS, VALIDATION_SIZE_SCHEMA, AugmentSpec, EarlyStopping, check_training_keys, check_validation_size
from .files import MAX_LAYERS, MAX_NESTING, MAX_SPEC_BYTES, apply_overrides, check_json, json_path, parse_override, read_spec_file


# The model name names a file (README "The spec format"); file-level limits live in specfile.py.
MAX_NAME_LENGTH = 100
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_LENGTH - 1}}}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, allow_inf_nan=False)


class Preprocess(_Strict):
    """Applied to raw pixel values before the first layer: x / divide - subtract (the seed's x/255 - 0.5)."""

    divide: PositiveFloat = 255.0
    subtract: float = 0.5


class InputSpec(_Strict):
    shape: list[PositiveInt] = Field(min_length=1, max_length=3, description="per-sample shape, e.g. [1, 28, 28] (C, H, W)")
    preprocess: Preprocess = Preprocess()


class DataSpec(BaseModel):
    """Where the examples come from: ``dataset`` names a source, whose own params sit beside it.

    The fields below are the general keys every source shares; any other key is a param of the
    source (``dir`` for fashion-mnist, ``path`` for image-folder, ...), checked against that source's
    ``Params`` by :func:`validate_spec`. Dumped as: dataset, the source's params, the general keys.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    dataset: str = Field("fashion-mnist", description="a dataset source (cnnkit datasets lists them); its params sit beside this key")
    train_limit: PositiveInt | None = Field(None, description="use only the first N training examples")
    test_limit: PositiveInt | None = Field(None, description="use only the first N test examples")
    validation: int | float | None = Field(None, description="hold out N training examples (an integer) or a fraction in (0, 1), stratified by class; null = none",
                                           json_schema_extra={"anyOf": VALIDATION_SIZE_SCHEMA})
    augment: AugmentSpec | None = Field(None, description="augmentation of training batches; null = none")

    _validation = field_validator("validation", mode="before")(check_validation_size)

    def source_params(self) -> dict[str, Any]:
        """The keys that belong to the source (every key that is not a general one)."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _source_params_after_dataset(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        params = {key: out.pop(key) for key in self.source_params() if key in out}
        return {"dataset": out.pop("dataset"), **params, **out} if "dataset" in out else {**params, **out}


class TrainSpec(_Strict):
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    optimizer: dict[str, Any] = Field(default_factory=lambda: {"type": "sgd", "lr": 0.01}, description="{'type': 'sgd' | 'adam' | 'adamw', ...}")
    schedule: dict[str, Any] | None = Field(None, description="learning-rate schedule stepped per batch: {'type': 'constant' | 'step' | 'cosine' | 'onecycle', ...}; null: constant lr")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, allow_inf_nan=False, description="cross-entropy target: 1 - x on the label plus x / classes on every class")
    clip_grad_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(None, description="scale the gradients so their joint L2 norm is at most this; null: no clipping")
    seed: NonNegativeInt = 0
    shuffle: bool = True
    early_stopping: EarlyStopping | None = Field(None, description="needs data.validation; null = train all epochs")
    restore_best: bool | None = Field(None, description="end with the weights of the best validation epoch; default: true when data.validation is set")


class ModelSpec(_Strict):
    """A whole model: architecture, input, data and training settings. Layers hold normalized params."""

    schema_: str | None = Field(None, alias="$schema", description="optional JSON Schema reference for editors")
    name: str = Field("model", description="names the default bundle file: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                      json_schema_extra={"pattern": f"^{NAME_PATTERN.pattern}$", "maxLength": MAX_NAME_LENGTH})
    input: InputSpec
    layers: list[dict[str, Any]] = Field(min_length=1)
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()

    @field_validator("name")
    @classmethod
    def _safe_file_name(cls, name: str, info: ValidationInfo) -> str:
        # Bundles written before the rule keep loading: their name names no file any more.
        if not NAME_PATTERN.fullmatch(name) and not (info.context or {}).get("from_bundle"):
            raise ValueError(f"name must be 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or digit (it names the bundle file)")
        return name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (defaults filled in, unset OPTIONAL_KEYS left out), the form stored in bundles."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=False, exclude={"schema_"})
        for section, keys in OPTIONAL_KEYS.items():
            for key in keys:
                if out[section].get(key) is None:
                    out[section].pop(key, None)
        return out


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer of a validated spec: its instance, provider and the shapes around it (batch axis excluded)."""

    index: int
    layer: Layer
    entry: registry.LayerEntry
    input_shape: Shape
    output_shape: Shape

    @property
    def type(self) -> str:
        """The recorded type: plain for built-ins, 'dist:type' for plugins (see registry)."""
        return self.entry.spec_type


# ---------------------------------------------------------------------------------------------------
# Error formatting


def _received(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside Optional[...], a union, list[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) pydantic model found at ``loc`` below ``model``, for did-you-mean."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _pydantic_errors(exc: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...], also_allowed: list[str] = ()) -> list[tuple[str, str]]:
    """One (json_path, message) per error; ``also_allowed`` are keys valid beside the model's own (for did-you-mean)."""
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = json_path(prefix + loc)
        kind = err["type"]
        if kind == "missing":
            msg = "required field is missing"
        elif kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1]) + (list(also_allowed) if len(loc) == 1 else [])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "; this takes no fields")
            msg = f"unknown field{hint}"
        else:
            text = err["msg"]
            if text.startswith("Value error, "):
                text = text[len("Value error, ") :]
            msg = f"{text[0].lower()}{text[1:]}"
            if "received" not in text.lower():  # a layer's own validator may already say what it got
                msg += f". Received: {_received(err['input'])}"
        errors.append((path, msg))
    return errors


# ---------------------------------------------------------------------------------------------------
# Validation


def validate_spec(data: Any, *, from_bundle: bool = False) -> ModelSpec:
    """Validate a parsed spec (a dict) fully, including layer params and shapes. Raises SpecError.

    ``from_bundle`` (a spec embedded in a bundle) skips the file-name rule for ``name`` and leaves
    the data source's params unchecked (a model predicts without its training source installed).
    """
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a JSON object. Received: {type(data).__name__}")
    check_json(data)
    try:
        spec = ModelSpec.model_validate(data, context={"from_bundle": from_bundle})
    except ValidationError as exc:
        raise SpecError(_pydantic_errors(exc, ModelSpec, ())) from None
    errors: list[tuple[str, str]] = []

    data_spec = spec.data if from_bundle else _validate_data(spec.data, errors)
    optimizer = _validate_optimizer(spec.train.optimizer, errors)
    schedule = _validate_schedule(spec.train.schedule, optimizer.get("lr"), errors)
    check_training_keys(spec, errors)
    resolved = _resolve(spec, errors)
    if errors:
        raise SpecError(errors)
    layers = [{"type": r.type, **r.layer.params.model_dump(mode="json")} for r in resolved]
    train = spec.train.model_copy(update={"optimizer": optimizer, "schedule": schedule})
    return spec.model_copy(update={"layers": layers, "data": data_spec, "train": train})


def validate_data(data: DataSpec) -> DataSpec:
    """``data`` with its source's params validated and filled in, the source named as a spec records it."""
    errors: list[tuple[str, str]] = []
    checked = _validate_data(data, errors)
    if errors:
        raise SpecError(errors)
    return checked


def _validate_data(data: DataSpec, errors: list[tuple[str, str]]) -> DataSpec:
    try:
        entry = DATASETS.find(data.dataset)
        cls = DATASETS.load(data.dataset)
    except RegistryError as exc:
        errors.append(("data.dataset", str(exc)))
        return data
    general = [name for name in DataSpec.model_fields if name != "dataset"]
    clash = sorted(set(general) & set(cls.Params.model_fields))
    if clash:  # the general key would silently win; the plugin must rename its param
        errors.append(("data.dataset", f"{entry.spec_type} from {entry.provider} declares {', '.join(clash)}, which are general data keys; the source must rename them"))
        return data
    try:
        params = cls.Params.model_validate(data.source_params())
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, cls.Params, ("data",), also_allowed=general))
        return data
    return data.model_copy(update={"dataset": entry.spec_type, **params.model_dump(mode="json")})


def _validate_optimizer(raw: dict[str, Any], errors: list[tuple[str, str]]) -> dict[str, Any]:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in OPTIMIZERS:
        errors.append(("train.optimizer.type", f"expected one of {', '.join(map(repr, OPTIMIZERS))}. Received: {_received(kind)}"))
        return raw
    params_model = OPTIMIZERS[kind].Params
    try:
        return params_model.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, params_model, ("train", "optimizer")))
        return raw


def _validate_schedule(raw: dict[str, Any] | None, base_lr: Any, errors: list[tuple[str, str]]) -> dict[str, Any] | None:
    """Check ``train.schedule`` with its type's Params; a length it gives itself is checked here, the run's at training."""
    if raw is None:
        return None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in SCHEDULES:
        errors.append(("train.schedule.type", f"expected one of {', '.join(map(repr, SCHEDULES))}. Received: {_received(kind)}"))
        return raw
    cls = SCHEDULES[kind]
    try:
        params = cls.Params.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, cls.Params, ("train", "schedule")))
        return raw
    if isinstance(base_lr, float) and (not cls.needs_total or getattr(params, "total_steps", None)):
        try:
            cls(params, base_lr, None)  # the schedule's own checks, e.g. warm-up shorter than total_steps
        except SpecError as exc:
            errors.extend(exc.errors)
    return params.model_dump(mode="json")


def _resolve(spec: ModelSpec, errors: list[tuple[str, str]]) -> list[ResolvedLayer]:
    """Instantiate each layer and infer shapes; stops at the first layer whose shape cannot be known."""
    resolved = []
    shape: Shape = tuple(spec.input.shape)
    for i, raw in enumerate(spec.layers):
        where = f"layers[{i}]"
        kind = raw.get("type")
        if not isinstance(kind, str):
            errors.append((f"{where}.type", f"every layer needs a string 'type'. Received: {_received(kind)}"))
            return resolved
        try:
            entry = registry.find(kind)
            cls = registry.load(kind)
        except RegistryError as exc:
            errors.append((f"{where}.type", str(exc)))
            return resolved
        fields = {k: v for k, v in raw.items() if k != "type"}
        try:
            layer = adapt(cls(cls.Params.model_validate(fields)))  # an older-contract plugin keeps working
        except ValidationError as exc:
            errors.extend(_pydantic_errors(exc, cls.Params, ("layers", i)))
            return resolved
        try:
            out = declared_output_shape(layer, shape, entry)
        except RegistryError as exc:  # the plugin broke the contract: not the spec's fault, but it stops here
            errors.append((where, str(exc)))
            return resolved
        except ValueError as exc:
            text = str(exc)
            errors.append((where, text if text.startswith(kind) else f"{kind}: {text}"))
            return resolved
        except Exception as exc:  # a plugin bug, reported where it happened
            errors.append((where, f"{kind}.output_shape failed: {type(exc).__name__}: {exc}"))
            return resolved
        if not out or any(d < 1 for d in out):
            errors.append((where, f"{kind}: output would be empty. Received: input_shape={list(shape)}, output_shape={list(out)}"))
            return resolved
        too_big = _too_big(out, {name: w.shape for name, w in layer.weights(shape).items()})
        if too_big:
            errors.append((where, f"{kind}: {too_big}. Received: input_shape={list(shape)}, output_shape={list(out)}"))
            return resolved
        resolved.append(ResolvedLayer(i, layer, entry, shape, out))
        shape = out
    return resolved


# One sample's activations or one weight array beyond this many elements cannot be what a spec means
# (it would need gigabytes per image), so validation says so instead of training failing to allocate.
MAX_ELEMENTS = 1 << 31


def _too_big(out: Shape, weight_shapes: dict[str, Shape]) -> str | None:
    if math.prod(out) > MAX_ELEMENTS:
        return f"output has {math.prod(out):,} values per sample, more than {MAX_ELEMENTS:,}"
    for name, w in weight_shapes.items():
        if math.prod(w) > MAX_ELEMENTS:
            return f"weight {name!r} would have {math.prod(w):,} values, more than {MAX_ELEMENTS:,}"
    return None


def resolve_layers(spec: ModelSpec) -> list[ResolvedLayer]:
    """Layers of an already validated spec, with shapes and providers."""
    errors: list[tuple[str, str]] = []
    resolved = _resolve(spec, errors)
    if errors:
        raise SpecError(errors)
    return resolved


# ---------------------------------------------------------------------------------------------------
# Files (reading, limits and --set live in specfile.py)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ModelSpec:
    """Read, override and validate a spec file."""
    return validate_spec(apply_overrides(read_spec_file(path), overrides or []))


def parameter_count(resolved: list[ResolvedLayer]) -> list[int]:
    return [sum(math.prod(w.shape) for w in r.layer.weights(r.input_shape).values()) for r in resolved]
