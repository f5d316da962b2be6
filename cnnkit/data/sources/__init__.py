"""Dataset sources: the `cnnkit.datasets` registry, and loading the dataset a spec's ``data`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...registry import Registry
from ..dataset import Dataset, checked, limit
from .base import DatasetSource, SourceParams, contract_problem

if TYPE_CHECKING:
    from ...spec import DataSpec

DATASETS = Registry("cnnkit.datasets", "dataset", DatasetSource, "cnnkit.data.DatasetSource", "dataset source", contract_problem)


def load_dataset(data: DataSpec, input_shape: tuple[int, ...]) -> Dataset:
    """The dataset of a validated spec's ``data`` section: loaded by its source, limited, checked.

    Raises DataError (one line) for missing or malformed data, RegistryError for a source that
    cannot be loaded.
    """
    from ...spec import validate_data  # the spec module imports this package: a top-level import would be a cycle

    data = validate_data(data)  # a no-op for a validated spec; a bundle's spec is checked here
    cls = DATASETS.load(data.dataset)
    source = cls(cls.Params.model_validate(data.source_params()))
    loaded = checked(source.load(tuple(input_shape)), tuple(input_shape), data.dataset)
    return limit(loaded, data.train_limit, data.test_limit)


__all__ = ["DATASETS", "DatasetSource", "SourceParams", "load_dataset"]
