"""`idx-folder`: any four IDX files (the MNIST format: MNIST, KMNIST, EMNIST, your own), class names optional."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ...errors import DataError
from ..dataset import Dataset, inferred_classes, test_only
from ..idx import map_idx
from .base import DatasetSource, SourceParams


class IdxFolder(DatasetSource):
    """Images and labels as IDX files in one folder, raw or .gz; raw byte files are memory-mapped."""

    class Params(SourceParams):
        path: str = Field(description="the folder holding the four files")
        train_images: str = Field("train-images-idx3-ubyte", description="file name in path (a .gz of it is found too)")
        train_labels: str = Field("train-labels-idx1-ubyte", description="file name in path (a .gz of it is found too)")
        test_images: str = Field("t10k-images-idx3-ubyte", description="file name in path (a .gz of it is found too)")
        test_labels: str = Field("t10k-labels-idx1-ubyte", description="file name in path (a .gz of it is found too)")
        classes: list[str] | None = Field(None, description="class names in label order; default: '0', '1', ... up to the largest label")

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        folder = Path(self.params.path)
        if not folder.is_dir():
            raise DataError(f"idx-folder: folder not found: {folder}")
        arrays = {key: map_idx(self._file(folder, key)) for key in ("train_images", "train_labels", "test_images", "test_labels")}
        classes = self.params.classes
        if classes is None:
            classes = inferred_classes({"train": arrays["train_labels"], "test": arrays["test_labels"]}, "idx-folder",
                                       f"in {folder} and data.classes is not set", "set data.classes")
        return Dataset(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], list(classes), str(folder))

    def load_test(self, input_shape: tuple[int, ...], classes: list[str] | None) -> Dataset:
        """The two test files only."""
        folder = Path(self.params.path)
        images, labels = (map_idx(self._file(folder, key)) for key in ("test_images", "test_labels"))
        classes = self.params.classes or classes
        if classes is None:
            classes = inferred_classes({"test": labels}, "idx-folder", f"in {folder} and data.classes is not set", "set data.classes")
        return test_only(images, labels, classes, str(folder))

    def test_files(self) -> list[str]:
        return ["path"]

    def _file(self, folder: Path, key: str) -> Path:
        name = getattr(self.params, key)
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        raise DataError(f"idx-folder: {folder} has no {name} (or {name}.gz) for data.{key}")
