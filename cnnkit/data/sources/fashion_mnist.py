"""`fashion-mnist`: Zalando's Fashion-MNIST, found in the usual places or downloaded once (cnnkit.data.fashion_mnist)."""

from __future__ import annotations

from pydantic import Field

from ..dataset import Dataset
from ..fashion_mnist import load_fashion_mnist
from .base import DatasetSource, SourceParams


class FashionMNIST(DatasetSource):
    """70,000 28x28 grayscale garments in 10 classes; the official files are verified by sha256."""

    folder_key = "dir"

    class Params(SourceParams):
        dir: str | None = Field(None, description="folder holding the four IDX files; default: search the usual places")

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        return load_fashion_mnist(self.params.dir)

    def load_test(self, input_shape: tuple[int, ...], classes: list[str] | None) -> Dataset:
        """The two test files only, so a folder holding just those is enough."""
        return load_fashion_mnist(self.params.dir, splits=("test",))

    def test_files(self) -> list[str]:
        return ["dir"] if self.params.dir is not None else []  # else searched for, and named when not found
