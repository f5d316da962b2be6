"""The dataset-source contract: a ``Params`` model for the spec's keys and a ``load`` giving a Dataset.

A source is named in a spec's ``data.dataset`` and registered under the entry-point group
``cnnkit.datasets`` (built-ins in cnnkit's pyproject.toml, exactly as a plugin does it). Its own
params sit beside ``dataset`` in the spec, next to the general keys (``train_limit``, ...) that
cnnkit handles for every source::

    "data": {"dataset": "image-folder", "path": "photos/", "test_fraction": 0.2, "train_limit": 1000}

``load`` returns every example it has; cnnkit then applies the limits and checks the arrays
(shapes, label range, class names), so a source only reads its format.
"""

from __future__ import annotations

from typing import ClassVar

from ...params import StrictParams
from ...plugins.registry import params_problem
from ..dataset import Dataset


class SourceParams(StrictParams):
    """Base of every source's params: strict, unknown keys refused (a typo is an error, not a default), no NaN/Infinity."""


class DatasetSource:
    """A dataset source. Subclasses set ``Params`` and implement ``load``; the constructor only stores."""

    Params: ClassVar[type[SourceParams]] = SourceParams
    # The Params field naming the source's folder: what `cnnkit evaluate --data-dir` replaces.
    folder_key: ClassVar[str] = "path"
    # The Params field naming the test data alone: what `cnnkit evaluate --data` sets (None: folder_key).
    test_key: ClassVar[str | None] = None

    def __init__(self, params: SourceParams):
        self.params = params

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        """All train and test examples. ``input_shape`` is the spec's (C, H, W), for sources that resize.

        Images: (N, H, W) or (N, C, H, W) (or channels last, (N, H, W, C)), uint8 or float raw pixel
        values, in memory or memory-mapped; labels: integer class indices. Raise DataError with one
        line naming the file and the problem for anything unreadable.
        """
        raise NotImplementedError

    def load_test(self, input_shape: tuple[int, ...], classes: list[str] | None) -> Dataset:
        """The test examples alone, for `cnnkit evaluate` and `report` (the train arrays may be empty:
        see :func:`cnnkit.data.dataset.test_only`). ``classes`` are the model's class names, for files
        that name none. Optional: by default, everything :meth:`load` gives."""
        return self.load(input_shape)

    def test_files(self) -> list[str]:
        """The Params fields naming files or folders :meth:`load_test` reads. Each is checked to exist
        first, so a missing one is named with where it was looked for. Default: none."""
        return []


def contract_problem(cls: type[DatasetSource]) -> str | None:
    """What is wrong with a DatasetSource subclass's static shape, or None."""
    problem = params_problem(cls, SourceParams, "cnnkit.data.SourceParams", "dataset", "the source")
    if problem:
        return problem
    if cls.load is DatasetSource.load:
        return f"{cls.__name__} does not implement load(input_shape)"
    return None
