"""Dataset sources: the `cnnkit.datasets` registry, and loading the dataset a spec's ``data`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...plugins.registry import Registry
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


def load_test_set(data: DataSpec, input_shape: tuple[int, ...], data_dir: str | None = None, limit: int | None = None) -> Dataset:
    """The test set of a (bundle's) ``data`` section, for evaluation: the first ``limit`` test examples.

    ``data_dir`` replaces the source's folder (its ``folder_key``: fashion-mnist's ``dir``,
    torchvision's ``root``, the others' ``path``).
    Fashion-MNIST reads only its two test files, so a folder holding just those is enough.
    """
    from ..fashion_mnist import load_fashion_mnist

    if data.dataset == "fashion-mnist":
        return load_fashion_mnist(data_dir or data.source_params().get("dir"), test_limit=limit, splits=("test",))
    update = {"test_limit": limit, **({DATASETS.load(data.dataset).folder_key: str(data_dir)} if data_dir is not None else {})}
    return load_dataset(data.model_copy(update=update), input_shape)


__all__ = ["DATASETS", "DatasetSource", "SourceParams", "load_dataset", "load_test_set"]
