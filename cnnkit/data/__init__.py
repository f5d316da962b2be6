"""Data: the Dataset type, dataset sources (a registry like the layers'), IDX files, images to predict on."""

from .dataset import Dataset
from .fashion_mnist import CLASSES, load_fashion_mnist, locate
from .idx import parse_idx, read_idx
from .images import read_images
from .sources import DATASETS, DatasetSource, SourceParams, load_dataset
from .testset import load_test_set

__all__ = [
    "CLASSES",
    "DATASETS",
    "Dataset",
    "DatasetSource",
    "SourceParams",
    "load_dataset",
    "load_fashion_mnist",
    "load_test_set",
    "locate",
    "parse_idx",
    "read_idx",
    "read_images",
]
