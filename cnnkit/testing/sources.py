"""Conformance kit for dataset sources: ``check_source(name_or_class, params, input_shape)``.

The contract (docs/plugins-sources.md): a ``DatasetSource`` subclass with a strict pydantic
``Params`` (the spec's keys beside ``data.dataset``) and ``load(input_shape)`` returning a
``cnnkit.data.Dataset``: uint8 or float images (N, H, W), (N, C, H, W) or (N, H, W, C), integer
labels (N,) within the classes, unique class names, the same examples every time. ``run_source_checks``
returns each check's outcome (``cnnkit check-source`` prints them); ``check_source`` raises
AssertionError naming every failed one. Bad arguments (an unknown source, params it refuses) raise
a CnnkitError instead, as for ``check_layer``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from ..data.dataset import Dataset, checked, checked_test
from ..data.sources import DATASETS, DatasetSource
from ..data.sources.base import contract_problem
from ..errors import DataError, RegistryError
from .layers import CheckResult, params_error, run_each

TRAIN_EXAMPLES = 64  # the training check's train_limit and test_limit
DEFAULT_INPUT_SHAPE = (1, 28, 28)  # asked of sources that resize; others' arrays give the shape


@dataclass
class _Subject:
    cls: type[DatasetSource]
    name: str  # for messages
    spec_name: str | None  # what a spec's data.dataset writes; None: not registered
    params: dict[str, Any]
    input_shape: tuple[int, ...] | None  # None: taken from the arrays the first load gives
    loaded: Dataset | None = None


def _resolve(name_or_class: str | type[DatasetSource]) -> tuple[type[DatasetSource], str, str | None]:
    """(class, label for messages, the name a spec gives it or None when it is not registered)."""
    if isinstance(name_or_class, str):
        return DATASETS.load(name_or_class), name_or_class, name_or_class
    cls = name_or_class
    if not (isinstance(cls, type) and issubclass(cls, DatasetSource)):
        raise RegistryError(f"check_source needs a dataset name or a DatasetSource subclass. Received: {cls!r}")
    problem = contract_problem(cls)
    if problem:
        raise RegistryError(f"{cls.__module__}.{cls.__qualname__} breaks the dataset source contract: {problem}")
    value = f"{cls.__module__}:{cls.__qualname__}"
    entries = [e for e in DATASETS.entries() if e.value == value]
    return cls, cls.__name__, entries[0].spec_type if entries else None


def _source(s: _Subject) -> DatasetSource:
    try:
        return s.cls(s.cls.Params.model_validate(s.params))
    except ValidationError as exc:
        raise params_error(s.name, exc, s.cls.Params) from None


def _shape_of(images: np.ndarray) -> tuple[int, ...]:
    """The channels-first input shape an array of images implies: (N, H, W) -> (1, H, W), channels last -> (C, H, W)."""
    per_image = tuple(int(d) for d in images.shape[1:])
    if len(per_image) == 3 and per_image[0] not in (1, 3, 4) and per_image[2] in (1, 3, 4):
        return (per_image[2], per_image[0], per_image[1])
    return (1, *per_image) if len(per_image) == 2 else per_image


def _check_contract(s: _Subject) -> CheckResult | str:
    from ..spec import DataSpec  # the keys a spec's data section keeps for every source

    fields = s.cls.Params.model_fields
    taken = [key for key in DataSpec.model_fields if key in fields]
    if taken:
        raise AssertionError(f"Params declares {taken}, which a spec's data section keeps for every source: the source would never receive them; rename them")
    try:
        s.cls.Params.model_json_schema()
    except Exception as exc:  # cnnkit schema and editors read it
        raise AssertionError(f"Params has no JSON Schema ({type(exc).__name__}: {exc}); use field types pydantic can describe") from None
    try:
        s.cls.Params.model_validate({**s.params, "no_such_key_": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError("Params accepted an unknown key: subclass cnnkit.data.SourceParams (extra='forbid'), so a typo in a spec is an error")
    if s.cls.folder_key not in fields:
        return CheckResult("source contract", "note", f"folder_key {s.cls.folder_key!r} is not a Params field, so `cnnkit evaluate --data-dir` cannot point "
                                                      f"this source at another folder; set folder_key to the field naming your data's folder")
    return f"Params with {len(fields)} field(s), unknown keys refused; folder_key {s.cls.folder_key!r}"


def _arrays_problem(data: object) -> str | None:
    """What the documented arrays and dtypes do not hold in ``data``, or None."""
    if not isinstance(data, Dataset):
        return f"load returned {type(data).__name__}, not a cnnkit.data.Dataset"
    for split in ("train", "test"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if not isinstance(images, np.ndarray) or not (images.dtype == np.uint8 or images.dtype.kind == "f"):
            what = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            return f"{split}_images must be a numpy array of uint8 or float pixel values. Received: {what}"
        if images.ndim not in (3, 4):
            return f"{split}_images must be (N, H, W), (N, C, H, W) or (N, H, W, C). Received: shape {list(images.shape)}"
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
            what = f"{labels.dtype}, shape {list(labels.shape)}" if isinstance(labels, np.ndarray) else type(labels).__name__
            return f"{split}_labels must be a 1-D array of integer class indices. Received: {what}"
    if data.train_images.shape[1:] != data.test_images.shape[1:]:
        return f"train images are {list(data.train_images.shape[1:])} each, test images {list(data.test_images.shape[1:])}"
    if not len(data.test_labels):
        return "the test set is empty: cnnkit reports test metrics after training and `cnnkit evaluate` reads it"
    return None


def _check_load(s: _Subject) -> str:
    data = _source(s).load(tuple(s.input_shape or DEFAULT_INPUT_SHAPE))
    problem = _arrays_problem(data)
    if problem:
        raise AssertionError(problem)
    s.input_shape = s.input_shape or _shape_of(data.train_images)
    s.loaded = checked(data, s.input_shape, s.name)  # shapes against input.shape, pairs, finite floats, class names
    return (f"{len(data.train_labels):,} train and {len(data.test_labels):,} test images, {data.train_images.dtype} {list(data.train_images.shape[1:])} each "
            f"(input.shape {list(s.input_shape)}); labels {data.train_labels.dtype}; {len(data.classes)} classes")


def _check_labels(s: _Subject) -> CheckResult | str:
    data = _loaded(s)
    seen = np.unique(data.train_labels)
    unused = [c for i, c in enumerate(data.classes) if i not in set(seen.tolist())]
    if unused:
        return CheckResult("labels", "note", f"every label is within the {len(data.classes)} classes, but {len(unused)} have no training example: {unused[:5]}")
    return f"every label is within the {len(data.classes)} classes; each class has training examples"


def _check_determinism(s: _Subject) -> str:
    first, second = _loaded(s), checked(_source(s).load(tuple(s.input_shape)), s.input_shape, s.name)
    if first.classes != second.classes:
        raise AssertionError(f"two loads gave different class names ({first.classes[:5]} then {second.classes[:5]})")
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        a, b = getattr(first, key), getattr(second, key)
        if a.shape != b.shape or not np.array_equal(a, b):
            raise AssertionError(f"two loads with the same params gave different {key}: a source gives the same examples in the same order every time "
                                 f"(draw any shuffle or split from np.random.default_rng(seed) with a seed in Params, never np.random; sort file listings)")
    return "two loads give the same arrays and class names"


def _check_test_alone(s: _Subject) -> CheckResult | str:
    data, source = _loaded(s), _source(s)
    fields = s.cls.Params.model_fields
    named = {"test_key": [s.cls.test_key] if s.cls.test_key else [], "test_files()": list(source.test_files())}
    for what, keys in named.items():
        stray = [k for k in keys if k not in fields]
        if stray:
            raise AssertionError(f"{what} names {stray}, which are not Params fields ({', '.join(fields)})")
    # As `cnnkit evaluate` loads it: with the model's class names, checked like a test set.
    alone = checked_test(source.load_test(tuple(s.input_shape), list(data.classes)), s.input_shape, s.name, list(data.classes))
    if not (np.array_equal(alone.test_images, data.test_images) and np.array_equal(alone.test_labels, data.test_labels)):
        raise AssertionError("load_test gave other test examples than load: `cnnkit evaluate` would score a model on other data than the run reported")
    if type(source).load_test is DatasetSource.load_test:
        return CheckResult("test data alone", "note", "load_test is cnnkit's default, which calls load: `cnnkit evaluate` reads the training data too; "
                                                     "implement load_test to read the test data alone")
    return f"load_test reads load's {len(alone.test_labels):,} test examples alone"


def _check_training(s: _Subject) -> CheckResult | str:
    if s.spec_name is None:
        return CheckResult("spec and training", "skip", "the class is not registered under the cnnkit.datasets entry points, so no spec can name it")
    import cnnkit

    classes = _loaded(s).classes
    spec = {"name": "check-source", "input": {"shape": list(s.input_shape)},
            "layers": [{"type": "flatten"}, {"type": "dense", "units": len(classes)}, {"type": "softmax"}],
            "data": {"dataset": s.spec_name, **s.params, "train_limit": TRAIN_EXAMPLES, "test_limit": TRAIN_EXAMPLES},
            "train": {"epochs": 1, "batch_size": 16}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a model this small, this briefly trained, is warned about: not the source's business
        model = cnnkit.train(spec)
    if model.classes != list(classes):
        raise AssertionError(f"a model trained through the spec got classes {model.classes[:5]}, the source gave {list(classes)[:5]}")
    return f"a spec naming {s.spec_name!r} with these params validates and trains one epoch on {TRAIN_EXAMPLES} examples (the path `cnnkit run` takes)"


def _loaded(s: _Subject) -> Dataset:
    if s.loaded is None:
        raise AssertionError("needs a successful load (see the load check)")
    return s.loaded


_CHECKS: list[tuple[str, Callable[[_Subject], Any]]] = [
    ("source contract", _check_contract),
    ("load", _check_load),
    ("labels", _check_labels),
    ("determinism", _check_determinism),
    ("test data alone", _check_test_alone),
    ("spec and training", _check_training),
]


def run_source_checks(name_or_class: str | type[DatasetSource], params: dict[str, Any] | None = None,
                      input_shape: tuple[int, ...] | None = None) -> tuple[tuple[int, ...] | None, list[CheckResult]]:
    """Run every check; returns the input shape used and each check's outcome (see the module docstring)."""
    cls, name, spec_name = _resolve(name_or_class)
    s = _Subject(cls, name, spec_name, dict(params or {}), tuple(input_shape) if input_shape else None)
    _source(s)  # params the source refuses are a bad argument, not a failed check
    results = run_each(_CHECKS, s, (AssertionError, DataError))  # DataError: what checked() found, already one line
    return s.input_shape, results


def check_source(name_or_class: str | type[DatasetSource], params: dict[str, Any] | None = None,
                 input_shape: tuple[int, ...] | None = None) -> list[CheckResult]:
    """Assert that a dataset source honours the contract; raises AssertionError naming every failed check."""
    shape, results = run_source_checks(name_or_class, params, input_shape)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        label = name_or_class if isinstance(name_or_class, str) else name_or_class.__name__
        raise AssertionError(f"check_source({label!r}): " + "; ".join(f"{r.name} failed: {r.detail}" for r in failed))
    return results
