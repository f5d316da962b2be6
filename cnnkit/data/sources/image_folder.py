"""`image-folder`: one subfolder of PNG/JPEG pictures per class (torchvision's ImageFolder layout), cached decoded.

Pictures are converted to the spec's channel count (1: grayscale, 3: RGB) and resized to its
height and width, decoded on all cores, and kept as one uncompressed .npz in the user cache
($XDG_CACHE_HOME/cnnkit/image-folder, default ~/.cache/cnnkit), memory-mapped from there. The cache
is rebuilt when any picture is added, removed or changed (name, size or modification time), and
when its bytes no longer match their CRC-32 checksums (a damaged cache file is never used).

A picture name that is not a regular file (a dangling symlink, a FIFO) and a class folder whose name
is not UTF-8 (class names are text in bundles) are one-line errors, not skipped.

Examples are ordered class by class in turn (the first picture of every class, then the second,
...; pictures sorted by name within a class), so ``train_limit`` takes a mix of all classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt

from ...errors import DataError, DataWarning
from ...files import file_kind
from ..arrays import cache_root, read_npz, write_npz
from ..dataset import Dataset, test_only
from ..images import PICTURE_SUFFIXES, named_picture_warnings, picture_size, read_picture
from .base import DatasetSource, SourceParams

CACHE_VERSION = 1  # bump when the cached layout or the decoding changes


class ImageFolder(DatasetSource):
    """``path/<class>/<picture>``; class names are the subfolder names, sorted."""

    test_key = "test_path"  # `cnnkit evaluate --data FOLDER`: a folder of class folders, all of it test data

    class Params(SourceParams):
        path: str = Field(description="folder with one subfolder of PNG/JPEG pictures per class")
        test_path: str | None = Field(None, description="the test set, in the same layout; default: hold out test_fraction of path")
        test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of each class held out as the test set when test_path is null")
        split_seed: NonNegativeInt = Field(0, description="seed of the held-out split (independent of train.seed)")
        resize: Literal["nearest", "bilinear", "bicubic", "lanczos"] | None = Field(
            "bilinear", description="filter resizing pictures to input.shape; null: pictures must already have that size")
        cache: bool = Field(True, description="keep the decoded arrays in the user cache")

    def load(self, input_shape: tuple[int, ...]) -> Dataset:
        p = self.params
        _check_input_shape(input_shape)
        classes, train_files = _list_folder(Path(p.path), None)
        test_files = _list_folder(Path(p.test_path), classes, "the training folder's")[1] if p.test_path else None
        signature = _signature(train_files + (test_files or []))
        cache = _cache_file(p, input_shape) if p.cache else None
        if cache is not None and cache.is_file() and _intact(cache):
            try:
                arrays = read_npz(cache, ("x_train", "y_train", "x_test", "y_test", "signature"))
                if str(arrays["signature"]) == signature:
                    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes, p.path)
            except DataError:
                pass  # a damaged cache is rebuilt below
        arrays = self._decode(train_files, test_files, input_shape)
        if cache is not None:
            try:
                write_npz(cache, {**arrays, "signature": np.array(signature)})
                arrays = read_npz(cache, ("x_train", "y_train", "x_test", "y_test"))
            except OSError:
                pass  # an unwritable cache costs time, not correctness
        return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes, p.path)

    def load_test(self, input_shape: tuple[int, ...], classes: list[str] | None) -> Dataset:
        """Only the test pictures are decoded: all of test_path when set (the training folder is not
        needed), else the held-out share of path, the same pictures :meth:`load` holds out."""
        p = self.params
        _check_input_shape(input_shape)
        whose = "the model's" if classes is not None else None
        if p.test_path:
            classes, files = _list_folder(Path(p.test_path), classes, whose)
        else:
            classes, everything = _list_folder(Path(p.path), classes, whose)
            held = _held_out(np.array([label for _, label in everything], dtype=np.int64), p.test_fraction, p.split_seed)
            files = [everything[i] for i in held]
        images, labels = self._decode_files(files, input_shape)
        return test_only(images, labels, classes, p.test_path or p.path)

    def test_files(self) -> list[str]:
        return ["test_path"] if self.params.test_path else ["path"]

    def _decode_files(self, files: list[tuple[Path, int]], input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, C, H, W) and int64 labels of (picture, label) pairs; Pillow's warnings one line each."""
        p = self.params
        with named_picture_warnings(lambda line: warnings.warn(DataWarning(f"image-folder: {line}"), stacklevel=3)):
            if p.resize is None:
                _check_sizes(files, input_shape)
            images = _decode_all([path for path, _ in files], input_shape, p.resize or "nearest")
        return images, np.array([label for _, label in files], dtype=np.int64)

    def _decode(self, train_files: list[tuple[Path, int]], test_files: list[tuple[Path, int]] | None, input_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        p = self.params
        images, labels = self._decode_files(train_files + (test_files or []), input_shape)
        if test_files is not None:
            n = len(train_files)
            return {"x_train": images[:n], "y_train": labels[:n], "x_test": images[n:], "y_test": labels[n:]}
        held = _held_out(labels, p.test_fraction, p.split_seed)
        keep = np.setdiff1d(np.arange(len(labels)), held)  # both sorted: the class-by-class order stays
        return {"x_train": images[keep], "y_train": labels[keep], "x_test": images[held], "y_test": labels[held]}


def _check_input_shape(input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise DataError(f"image-folder: input.shape must be [1, H, W] (grayscale) or [3, H, W] (RGB). Received: {list(input_shape)}")


def _list_folder(folder: Path, classes: list[str] | None, whose: str | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and (picture, label) pairs, interleaved class by class; ``classes`` fixes the names
    (a test folder's must be ``whose``: the training folder's, the model's)."""
    if not folder.is_dir():
        raise DataError(f"image-folder: folder not found: {folder}")
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    for name in found:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # os.scandir gives undecodable bytes as surrogates
            raise DataError(f"image-folder: class folder {os.fsencode(name)!r} in {folder} is not named in UTF-8; "
                            f"class names are stored as text, so rename it") from None
    if classes is None:
        if not found:
            raise DataError(f"image-folder: {folder} has no class subfolders; put each class's pictures in path/<class name>/")
        classes = found
    elif found != classes:
        raise DataError(f"image-folder: {folder} has class folders {found[:10]}, but {whose} classes are {classes[:10]}; they must match")
    per_class = []
    for label, name in enumerate(classes):
        named = [entry for entry in os.scandir(folder / name) if not entry.name.startswith(".") and entry.name.lower().endswith(PICTURE_SUFFIXES)]
        for entry in named:
            if not entry.is_file() and not entry.is_dir():  # a picture's name on something that is none
                raise DataError(f"image-folder: {entry.path} is {_what(entry)}, not a picture; remove it or put the picture there")
        pictures = sorted(entry.path for entry in named if entry.is_file())
        if not pictures:
            raise DataError(f"image-folder: class folder {folder / name} has no PNG or JPEG pictures")
        per_class.append([(Path(path), label) for path in pictures])
    depth = max(len(files) for files in per_class)
    return classes, [files[i] for i in range(depth) for files in per_class if i < len(files)]


def _what(entry: os.DirEntry) -> str:
    """'a dangling symlink (to X)', 'a FIFO (named pipe)', ...: what a directory entry is, for messages."""
    try:
        return f"a {file_kind(entry.stat().st_mode)}"
    except FileNotFoundError:
        return f"a dangling symlink (to {os.readlink(entry.path)})" if entry.is_symlink() else "gone"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"


def _signature(files: list[tuple[Path, int]]) -> str:
    """sha256 over every picture's path, label, size and modification time: changes when any file does."""
    digest = hashlib.sha256()
    for path, label in files:
        stat = path.stat()
        digest.update(os.fsencode(path) + f"\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _intact(cache: Path) -> bool:
    """Whether every member of the cache file matches its CRC-32 (zip's own checksum, written by
    np.savez): the arrays are memory-mapped, so damage would otherwise be trained on unseen."""
    try:
        with zipfile.ZipFile(cache) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _cache_file(params: ImageFolder.Params, input_shape: tuple[int, ...]) -> Path:
    """One cache file per folder and decoding setting (so a changed folder overwrites its own entry)."""
    key = {"version": CACHE_VERSION, "path": str(Path(params.path).resolve()), "test_path": params.test_path and str(Path(params.test_path).resolve()),
           "shape": list(input_shape), "resize": params.resize, "test_fraction": params.test_fraction, "split_seed": params.split_seed}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / "image-folder" / f"{name}.npz"


def _check_sizes(files: list[tuple[Path, int]], input_shape: tuple[int, ...]) -> None:
    """With resize null every picture must have the input's size: mixed sizes name two files that differ."""
    with ThreadPoolExecutor(_workers()) as pool:
        sizes = list(pool.map(picture_size, [path for path, _ in files]))
    first = sizes[0]
    for (path, _), size in zip(files, sizes):
        if size != first:
            raise DataError(f"image-folder: mixed picture sizes ({files[0][0]} is {first[0]}x{first[1]}, {path} is {size[0]}x{size[1]}) "
                            f"and data.resize is null; set data.resize (e.g. \"bilinear\") to resize them to the input size")
    if first != (input_shape[2], input_shape[1]):
        raise DataError(f"image-folder: pictures are {first[0]}x{first[1]} but input.shape {list(input_shape)} wants "
                        f"{input_shape[2]}x{input_shape[1]} and data.resize is null; set data.resize or input.shape")


def _decode_all(paths: list[Path], input_shape: tuple[int, ...], resample: str) -> np.ndarray:
    """uint8 (N, C, H, W), decoded by one thread per core (Pillow releases the GIL while decoding)."""
    out = np.empty((len(paths), *input_shape), np.uint8)
    channels, size = input_shape[0], tuple(input_shape[1:])

    def decode(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            out[i] = read_picture(paths[i], size, channels, resample)

    chunk = 256
    with ThreadPoolExecutor(_workers()) as pool:
        futures = [pool.submit(decode, lo, min(lo + chunk, len(paths))) for lo in range(0, len(paths), chunk)]
        try:
            for future in futures:
                future.result()  # the first broken picture, in file order, is the error raised
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out


def _held_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random share of each class (at least one, leaving at least one)."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(held))


def _workers() -> int:
    from ...runtime.parallel import num_threads

    return max(1, num_threads())
