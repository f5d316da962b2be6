"""`npz`: arrays x_train, y_train, x_test, y_test (and optionally classes) in one .npz file, read without pickle."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..arrays import read_npz
from ..dataset import Dataset, inferred_classes, test_only
from .base import DatasetSource, SourceParams


class Npz(DatasetSource):
    """NumPy arrays: images (N, H, W), (N, C, H, W) or (N, H, W, C); integer labels (N,); class names optional.

    Saved with ``np.savez`` (uncompressed), the image arrays are memory-mapped: a dataset bigger
    than memory trains a batch at a time. ``np.savez_compressed`` files are read into memory.
    """

    class Params(SourceParams):
        path: str = Field(description="the .npz file")
        mmap: bool = Field(True, description="memory-map arrays stored uncompressed (np.savez) instead of reading them")

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        path = self.params.path
        arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"), ("classes",), mmap=self.params.mmap)
        labels = [np.asarray(arrays[key]) for key in ("y_train", "y_test")]
        if "classes" in arrays:
            classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
        else:  # class k is named "k", up to the largest label (a bad label is reported by the checks)
            classes = inferred_classes(dict(zip(("train", "test"), labels)), "npz", f"in {path}, which has no classes array",
                                       "add a classes array of names")
        return Dataset(arrays["x_train"], labels[0], arrays["x_test"], labels[1], classes, str(path))

    def load_test(self, input_shape: tuple[int, ...], classes: list[str] | None) -> Dataset:
        """x_test and y_test only (an .npz holding just those is enough)."""
        path = self.params.path
        arrays = read_npz(path, ("x_test", "y_test"), ("classes",), mmap=self.params.mmap)
        if "classes" in arrays:
            classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
        elif classes is None:
            classes = inferred_classes({"test": np.asarray(arrays["y_test"])}, "npz", f"in {path}, which has no classes array", "add a classes array of names")
        return test_only(arrays["x_test"], np.asarray(arrays["y_test"]), classes, str(path))

    def test_files(self) -> list[str]:
        return ["path"]
