"""A spec's ``data`` and ``train`` sections, resolved: the dataset source, optimizer and schedule they
name found and their params validated by their own pydantic models, once, into typed objects.

``resolve_data`` and ``resolve_train`` append every problem to an error list (JSON path, message) and
return the section, or None when it has problems. They also make the checks that need a second part of
the spec: augmentation against the input shape, early stopping and restore_best without a validation split.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, NonNegativeInt, PositiveInt, PrivateAttr, SerializeAsAny, ValidationError, field_validator, model_serializer

from ..data.sources import DATASETS, DatasetSource, SourceParams
from ..errors import RegistryError, SpecError
from ..layers.base import Shape
from ..optim import OPTIMIZERS, SCHEDULES, OptimizerParams, ScheduleParams
from ..params import StrictParams
from .problems import Problems, pydantic_problems, received
from .training import VALIDATION_SIZE_SCHEMA, AugmentSpec, EarlyStopping, EmaSpec, check_validation_size


class DataSpec(StrictParams):
    """Where the examples come from: ``dataset`` names a source, whose own params sit beside it.

    The fields below are the general keys every source shares; any other key is a param of the
    source (``dir`` for fashion-mnist, ``path`` for image-folder, ...). Once resolved (by
    ``validate_spec`` or ``validate_data``) ``dataset`` is the name a spec records (``dist:name`` for a
    plugin's source), ``source`` the source's validated params and ``source_class`` its class.
    Dumped as: dataset, the source's params, the general keys.
    """

    model_config = ConfigDict(extra="allow")  # the source's params: checked against its own Params when resolved

    dataset: str = Field("fashion-mnist", description="a dataset source (cnnkit datasets lists them); its params sit beside this key")
    train_limit: PositiveInt | None = Field(None, description="use only the first N training examples")
    test_limit: PositiveInt | None = Field(None, description="use only the first N test examples")
    validation: int | float | None = Field(None, description="hold out N training examples (an integer) or a fraction in (0, 1), stratified by class; null = none",
                                           json_schema_extra={"anyOf": VALIDATION_SIZE_SCHEMA})
    augment: AugmentSpec | None = Field(None, description="augmentation of training batches; null = none")

    _source: SourceParams | None = PrivateAttr(None)
    _source_class: type[DatasetSource] | None = PrivateAttr(None)

    _validation = field_validator("validation", mode="before")(check_validation_size)

    @property
    def source(self) -> SourceParams | None:
        """The source's params, typed and validated (None in a DataSpec that was not resolved)."""
        return self._source

    @property
    def source_class(self) -> type[DatasetSource] | None:
        """The DatasetSource subclass ``dataset`` names (None in a DataSpec that was not resolved)."""
        return self._source_class

    def source_params(self) -> dict[str, Any]:
        """The keys that belong to the source (every key that is not a general one), as JSON."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _source_params_after_dataset(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        params = {key: out.pop(key) for key in self.source_params() if key in out}
        return {"dataset": out.pop("dataset"), **params, **out} if "dataset" in out else {**params, **out}


class TrainSpec(StrictParams):
    """How to train: epochs, batches, the optimizer and its schedule, and the loop's other settings.

    Once resolved, ``optimizer`` holds the named optimizer's own Params (``train.optimizer.lr``) and
    ``schedule`` the named schedule's (or None: a constant rate).
    """

    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    optimizer: SerializeAsAny[OptimizerParams] = Field(default_factory=lambda: OPTIMIZERS["sgd"].Params(lr=0.01), description="{'type': 'sgd' | 'adam' | 'adamw', ...}")
    schedule: SerializeAsAny[ScheduleParams] | None = Field(None, description="learning-rate schedule stepped per batch: {'type': 'constant' | 'step' | 'cosine' | 'onecycle', ...}; null: constant lr")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy target: 1 - x on the label plus x / classes on every class")
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = Field(None, description="scale the gradients so their joint L2 norm is at most this; null: no clipping")
    seed: NonNegativeInt = 0
    shuffle: bool = True
    early_stopping: EarlyStopping | None = Field(None, description="needs data.validation; null = train all epochs")
    restore_best: bool | None = Field(None, description="end with the weights of the best validation epoch; default: true when data.validation is set")
    ema: EmaSpec | None = Field(None, description="keep a moving average of the weights, score it each epoch and keep it in the bundle; null = off")


DEFAULT_OPTIMIZER = {"type": "sgd", "lr": 0.01}
GENERAL_DATA_KEYS = [name for name in DataSpec.model_fields if name != "dataset"]


def resolve_data(raw: Any, input_shape: Shape | None, errors: Problems) -> DataSpec | None:
    """The ``data`` section with its source found and its params validated and filled in.

    ``input_shape`` (None when the spec's own is invalid) checks the augmentation against the images.
    """
    try:
        data = DataSpec.model_validate(raw)
    except ValidationError as exc:
        errors.extend(pydantic_problems(exc, DataSpec, ("data",)))
        return None
    try:
        entry = DATASETS.find(data.dataset)
        cls = DATASETS.load(data.dataset)
    except RegistryError as exc:
        errors.append(("data.dataset", str(exc)))
        return None
    clash = sorted(set(GENERAL_DATA_KEYS) & set(cls.Params.model_fields))
    if clash:  # the general key would silently win; the plugin must rename its param
        errors.append(("data.dataset", f"{entry.spec_type} from {entry.provider} declares {', '.join(clash)}, which are general data keys; the source must rename them"))
        return None
    try:
        params = cls.Params.model_validate(data.source_params())
    except ValidationError as exc:
        errors.extend(pydantic_problems(exc, cls.Params, ("data",), also_allowed=GENERAL_DATA_KEYS))
        return None
    resolved = data.model_copy(update={"dataset": entry.spec_type, **params.model_dump(mode="json")})
    resolved._source, resolved._source_class = params, cls
    before = len(errors)
    augment = resolved.augment
    if input_shape is not None and augment is not None and augment.active:
        if len(input_shape) != 3:
            errors.append(("data.augment", f"augmentation works on images, input.shape [C, H, W]. Received: input.shape={list(input_shape)}"))
        elif augment.crop_padding >= min(input_shape[1:]):
            errors.append(("data.augment.crop_padding", f"must be smaller than the image ({input_shape[1]}x{input_shape[2]}), or a crop could miss "
                           f"the image entirely. Received: {augment.crop_padding}"))
    return resolved if len(errors) == before else None


def resolve_train(raw: Any, has_validation: bool, errors: Problems) -> TrainSpec | None:
    """The ``train`` section with its optimizer and schedule typed; ``has_validation``: data.validation is set."""
    fields = dict(raw) if isinstance(raw, dict) else raw  # not a map: TrainSpec says so below
    before = len(errors)
    if isinstance(raw, dict):  # a value that is not a map is TrainSpec's to reject
        optimizer = raw.get("optimizer", DEFAULT_OPTIMIZER)
        if isinstance(optimizer, dict):
            optimizer = _set_or_drop(fields, "optimizer", _optimizer(optimizer, errors))
        if isinstance(raw.get("schedule"), dict):
            _set_or_drop(fields, "schedule", _schedule(raw["schedule"], optimizer, errors))
    try:
        train = TrainSpec.model_validate(fields)
    except ValidationError as exc:
        errors.extend(pydantic_problems(exc, TrainSpec, ("train",)))
        return None
    if not has_validation:
        if train.early_stopping is not None:
            errors.append(("train.early_stopping", "needs data.validation: early stopping watches the validation split"))
        if train.restore_best:
            errors.append(("train.restore_best", "needs data.validation: the best weights are those of the best validation epoch"))
    return train if len(errors) == before else None


def _set_or_drop(fields: dict[str, Any], key: str, typed: Any) -> Any:
    """``fields[key] = typed``; a part that failed (None) is reported already, so TrainSpec checks the rest without it."""
    if typed is None:
        fields.pop(key, None)
    else:
        fields[key] = typed
    return typed


def _optimizer(raw: dict[str, Any], errors: Problems) -> OptimizerParams | None:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in OPTIMIZERS:
        errors.append(("train.optimizer.type", f"expected one of {', '.join(map(repr, OPTIMIZERS))}. Received: {received(kind)}"))
        return None
    params_model = OPTIMIZERS[kind].Params
    try:
        return params_model.model_validate(raw)
    except ValidationError as exc:
        errors.extend(pydantic_problems(exc, params_model, ("train", "optimizer")))
        return None


def _schedule(raw: dict[str, Any], optimizer: Any, errors: Problems) -> ScheduleParams | None:
    """``train.schedule`` checked with its type's Params; a length it gives itself is checked here, the run's at training."""
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in SCHEDULES:
        errors.append(("train.schedule.type", f"expected one of {', '.join(map(repr, SCHEDULES))}. Received: {received(kind)}"))
        return None
    cls = SCHEDULES[kind]
    try:
        params = cls.Params.model_validate(raw)
    except ValidationError as exc:
        errors.extend(pydantic_problems(exc, cls.Params, ("train", "schedule")))
        return None
    if isinstance(optimizer, OptimizerParams) and (not cls.needs_total or getattr(params, "total_steps", None)):
        try:
            cls(params, optimizer.lr, None)  # the schedule's own checks, e.g. warm-up shorter than total_steps
        except SpecError as exc:
            errors.extend(exc.errors)
            return None
    return params
