"""A loaded dataset (train and test arrays, class names) and the checks every source's data passes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import DataError

# Float images are checked for NaN/infinity this many at a time, so a memory-mapped array is never
# read into memory whole.
CHECK_CHUNK = 4096
# Class names made up from the labels ("0", "1", ...) stop here: a label of 2**40 in a file that names
# no classes would otherwise have cnnkit build a name for every class below it.
MAX_INFERRED_CLASSES = 100_000


@dataclass(frozen=True)
class Dataset:
    """Raw images with int64 labels, train and test, plus class names and where they came from.

    Images are (N, H, W) (one channel) or (N, C, H, W), uint8 or float in raw pixel units (the
    spec's ``input.preprocess`` turns them into model input). They may be memory-mapped
    (``np.memmap`` / ``np.load(mmap_mode="r")``): training converts them a batch at a time.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str


def test_only(images: np.ndarray, labels: np.ndarray, classes: list[str], source: str) -> Dataset:
    """A Dataset of test examples alone (empty train arrays of the same per-image shape)."""
    return Dataset(images[:0], labels[:0], images, labels, list(classes), source)


def limit(data: Dataset, train_limit: int | None, test_limit: int | None) -> Dataset:
    """The first ``train_limit`` / ``test_limit`` examples (views: nothing is copied)."""
    return replace(
        data,
        train_images=data.train_images[:train_limit],
        train_labels=data.train_labels[:train_limit],
        test_images=data.test_images[:test_limit],
        test_labels=data.test_labels[:test_limit],
    )


def inferred_classes(labels: dict[str, np.ndarray], where: str, unnamed: str, fix: str) -> list[str]:
    """Class names "0", "1", ... up to the largest integer label of ``labels`` ({split: labels}), for
    sources whose files name no classes. A label of MAX_INFERRED_CLASSES or more is one DataError,
    before any name is built; other bad labels (negative, not integers) are left to :func:`checked`.
    ``where`` starts the message, ``unnamed`` says why names are made up, ``fix`` what to do instead.
    """
    top = 0
    for split, y in labels.items():
        if y.size and np.issubdtype(y.dtype, np.integer):
            high = int(y.max())
            if high >= MAX_INFERRED_CLASSES:
                raise DataError(f"{where}: {split} labels go up to {high:,} {unnamed}; class names are made up from the labels "
                                f"(\"0\", \"1\", ...) for at most {MAX_INFERRED_CLASSES:,} classes: fix the labels or {fix}")
            top = max(top, high)
    return [str(k) for k in range(top + 1)]


def checked(data: Dataset, input_shape: tuple[int, ...], name: str) -> Dataset:
    """``data`` checked against itself and the spec's input shape; labels as int64, channels-last images as views.

    ``name`` (the dataset, e.g. "npz") starts every message. Each problem is one DataError line
    saying what is wrong, where, and what was received; nothing is trained on data that fails.
    """
    if not isinstance(data, Dataset):
        raise DataError(f"{name}: the source returned {type(data).__name__}, not a cnnkit.data.Dataset")
    classes = data.classes
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{name}: class names must be a non-empty list of strings. Received: {str(classes)[:80]}")
    if len(set(classes)) != len(classes):
        twice = sorted({c for c in classes if list(classes).count(c) > 1})
        raise DataError(f"{name}: class names must be unique. Received twice: {', '.join(map(repr, twice[:5]))}")
    arrays = {}
    for split in ("train", "test"):
        images = _images(getattr(data, f"{split}_images"), input_shape, f"{name}: {split} images")
        labels = _labels(getattr(data, f"{split}_labels"), len(classes), f"{name}: {split} labels")
        if len(images) != len(labels):
            raise DataError(f"{name}: {split} has {len(images):,} images but {len(labels):,} labels; they must pair up one to one")
        arrays[split] = (images, labels)
    if not len(arrays["train"][1]):
        raise DataError(f"{name}: the training set is empty")
    if not len(arrays["test"][1]):  # every run is scored on the test set: refused now, not as a NaN score after training
        raise DataError(f"{name}: the test set is empty (0 test images); every run is scored on test images, so add some")
    (x, y), (xt, yt) = arrays["train"], arrays["test"]
    return Dataset(x, y, xt, yt, list(classes), data.source)


def checked_test(data: Dataset, input_shape: tuple[int, ...], name: str, classes: list[str] | None) -> Dataset:
    """The test half of :func:`checked`, for evaluation: images, labels (against ``classes``, the
    model's class names: as many as the data's, which may be named otherwise), at least one example."""
    if not isinstance(data, Dataset):
        raise DataError(f"{name}: the source returned {type(data).__name__}, not a cnnkit.data.Dataset")
    if classes is not None and len(data.classes) != len(classes):  # names may differ: a model's classes may be renamed
        raise DataError(f"{name}: the test data has {len(data.classes)} classes ({', '.join(map(str, list(data.classes)[:5]))}, ...), "
                        f"the model {len(classes)} ({', '.join(map(str, list(classes)[:5]))}, ...); they must pair up")
    classes = list(classes if classes is not None else data.classes)
    images = _images(data.test_images, input_shape, f"{name}: test images")
    labels = _labels(data.test_labels, len(classes), f"{name}: test labels")
    if len(images) != len(labels):
        raise DataError(f"{name}: test has {len(images):,} images but {len(labels):,} labels; they must pair up one to one")
    if not len(labels):
        raise DataError(f"{name}: the test data holds no images")
    return Dataset(images[:0], labels[:0], images, labels, classes, data.source)


def _images(images: object, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise DataError(f"{where} must be a numpy array. Received: {type(images).__name__}")
    if images.dtype.hasobject or not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{where} must hold numbers (uint8 or float). Received: dtype={images.dtype}")
    per_image = images.shape[1:]
    if per_image != input_shape and not (len(input_shape) == 3 and input_shape[0] == 1 and per_image == input_shape[1:]):
        if len(input_shape) == 3 and per_image == (*input_shape[1:], input_shape[0]):
            images = np.moveaxis(images, 3, 1)  # (N, H, W, C) -> (N, C, H, W), a view
        else:
            raise DataError(f"{where} are {list(per_image)} each, but the spec's input.shape is {list(input_shape)}; "
                            f"set input.shape to match (channels first) or resize the images")
    if images.dtype.kind == "f":
        for start in range(0, len(images), CHECK_CHUNK):
            if not np.isfinite(images[start : start + CHECK_CHUNK]).all():
                raise DataError(f"{where} hold NaN or infinity (first in images {start}..{min(start + CHECK_CHUNK, len(images)) - 1})")
    return images


def _labels(labels: object, classes: int, where: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        shape = list(labels.shape) if isinstance(labels, np.ndarray) else type(labels).__name__
        raise DataError(f"{where} must be a 1-D array of class indices. Received: {shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where} must be integers (class indices). Received: dtype={labels.dtype}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{where} range over {labels.min()}..{labels.max()}, but there are {classes} classes (0..{classes - 1})")
    return labels
