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
