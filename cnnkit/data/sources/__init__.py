"""Dataset sources: the `cnnkit.datasets` registry, and loading the dataset a spec's ``data`` names.

The loaders take the ``data`` section of a validated spec (cnnkit.spec.DataSpec), whose source the
spec resolved once: its class and typed params. They read it by its attributes and do not import the
spec package, which imports this one to resolve sources.
"""

from __future__ import annotations

from typing import Any

from ...errors import CnnkitError
from ...plugins.registry import Registry
from ..dataset import Dataset, checked, limit
from .base import DatasetSource, SourceParams, contract_problem

DATASETS = Registry("cnnkit.datasets", "dataset", DatasetSource, "cnnkit.data.DatasetSource", "dataset source", contract_problem)


def load_dataset(data: Any, input_shape: tuple[int, ...]) -> Dataset:
    """The dataset of a validated spec's ``data`` section (a cnnkit.spec.DataSpec whose source is
    resolved): loaded by its source, limited, checked.

    Raises DataError (one line) for missing or malformed data.
    """
    return _load(_source_of(data), data.dataset, tuple(input_shape), data.train_limit, data.test_limit)


def _source_of(data: Any) -> DatasetSource:
    """The source a resolved data section names, ready to load (its constructor only stores its params)."""
    if data.source_class is None:
        raise CnnkitError("this data section was not validated: resolve it first with cnnkit.spec.validate_data (validate_spec does it for a whole spec)")
    return data.source_class(data.source)


def _load(source: DatasetSource, name: str, input_shape: tuple[int, ...], train_limit: int | None, test_limit: int | None) -> Dataset:
    return limit(checked(source.load(input_shape), input_shape, name), train_limit, test_limit)


__all__ = ["DATASETS", "DatasetSource", "SourceParams", "load_dataset"]
