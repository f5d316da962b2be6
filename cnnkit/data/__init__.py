"""Data sources: IDX files, Fashion-MNIST, and images to predict on."""

from .fashion_mnist import CLASSES, Dataset, load_fashion_mnist, locate
from .idx import parse_idx, read_idx
from .images import read_images

__all__ = ["CLASSES", "Dataset", "load_fashion_mnist", "locate", "parse_idx", "read_idx", "read_images"]
