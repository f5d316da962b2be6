"""`torchvision`: an image-classification dataset class of torchvision.datasets by name, converted to uint8 arrays once.

Needs the extra: ``pip install 'cnnkit[torchvision]'``. The arrays go to the user cache (an
uncompressed .npz, memory-mapped from then on) keyed by class name and root folder, so torch is
imported only for the first load.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
from pydantic import Field

from ...errors import DataError
from ..arrays import cache_root, read_npz, write_npz
from ..dataset import Dataset
from .base import DatasetSource, SourceParams

PIP = "pip install 'cnnkit[torchvision]'"
CACHE_VERSION = 1


class Torchvision(DatasetSource):
    """``torchvision.datasets.<name>(root, train=True/False or split="train"/"test", download=...)``."""

    folder_key = "root"

    class Params(SourceParams):
        name: str = Field(description="a class of torchvision.datasets, e.g. FashionMNIST, MNIST, KMNIST, CIFAR10, SVHN")
        root: str = Field("data", description="the dataset's root folder, as torchvision expects it (e.g. root/FashionMNIST/raw)")
        download: bool = Field(False, description="let torchvision download the files into root when they are missing")
        cache: bool = Field(True, description="keep the converted arrays in the user cache")

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        p = self.params
        cache = cache_root() / "torchvision" / f"{_key(p.name, p.root)}.npz" if p.cache else None
        if cache is not None and cache.is_file():
            try:
                arrays = read_npz(cache, ("x_train", "y_train", "x_test", "y_test", "classes"))
                return _dataset(arrays, p.root)
            except DataError:
                pass  # a damaged cache is rebuilt
        arrays = convert(p.name, p.root, p.download)
        if cache is not None:
            try:
                write_npz(cache, arrays)
                arrays = read_npz(cache, ("x_train", "y_train", "x_test", "y_test", "classes"))
            except OSError:
                pass
        return _dataset(arrays, p.root)


def _key(name: str, root: str) -> str:
    text = json.dumps({"version": CACHE_VERSION, "name": name, "root": str(Path(root).resolve())}, sort_keys=True)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _dataset(arrays: dict[str, np.ndarray], root: str) -> Dataset:
    classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes, root)


def convert(name: str, root: str, download: bool) -> dict[str, np.ndarray]:
    """Both splits of ``torchvision.datasets.<name>`` as uint8 images (N, H, W) or (N, C, H, W), int64 labels, class names."""
    try:
        import torchvision.datasets as tv_datasets
    except Exception as exc:  # ImportError, or a torch/torchvision pair that fails at import
        raise DataError(f"the torchvision dataset source needs torchvision ({type(exc).__name__}: {str(exc)[:120]}); install it with: {PIP}") from None
    cls = getattr(tv_datasets, name, None)
    if not (isinstance(cls, type) and hasattr(cls, "__getitem__")):
        known = sorted(n for n in dir(tv_datasets) if isinstance(getattr(tv_datasets, n), type) and not n.startswith("_"))
        raise DataError(f"torchvision.datasets has no dataset class {name!r}; some it has: {', '.join(known[:12])}, ...")
    params = inspect.signature(cls).parameters
    arrays: dict[str, np.ndarray] = {}
    classes = None
    for split in ("train", "test"):
        if "train" in params:
            kwargs = {"train": split == "train"}
        elif "split" in params:
            kwargs = {"split": split}
        else:
            raise DataError(f"torchvision.datasets.{name} has neither a train= nor a split= argument; cnnkit cannot pick its train and test sets")
        try:
            dataset = cls(root=root, download=download, **kwargs)
        except Exception as exc:  # missing files, failed download, ... as torchvision says it
            hint = "" if download else " (data.download is false: set it to true to let torchvision fetch the files)"
            raise DataError(f"torchvision.datasets.{name}(root={root!r}, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {exc}{hint}") from None
        arrays[f"x_{split}"], arrays[f"y_{split}"] = _arrays(dataset, name)
        classes = classes or list(getattr(dataset, "classes", []) or [])
    if not classes:
        top = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0)))
        classes = [str(k) for k in range(top + 1)]
    arrays["classes"] = np.array([str(c) for c in classes])
    return arrays


def _arrays(dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one split: from .data/.targets (MNIST family, CIFAR) or sample by sample."""
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is not None and targets is not None:
        images = np.asarray(data.numpy() if hasattr(data, "numpy") else data)
        labels = np.asarray(targets.numpy() if hasattr(targets, "numpy") else targets)
        if images.dtype == np.uint8 and images.ndim in (3, 4) and labels.ndim == 1 and len(images) == len(labels):
            return images, labels.astype(np.int64)
    images, labels = [], []
    for i in range(len(dataset)):
        picture, label = dataset[i]
        array = np.asarray(picture, dtype=np.uint8)  # a PIL image: (H, W) or (H, W, C)
        images.append(array if array.ndim == 2 else array.transpose(2, 0, 1))
        labels.append(int(label))
    if len({a.shape for a in images}) > 1:
        raise DataError(f"torchvision.datasets.{name}: pictures differ in size; use the image-folder source, which resizes them")
    return np.stack(images), np.array(labels, dtype=np.int64)
