"""Fashion-MNIST: find the four IDX files (or download them once); the official copies are verified by sha256."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .arrays import cache_root
from .dataset import Dataset
from .idx import parse_idx, read_bytes

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# sha256 of the *decompressed* IDX bytes: the same data ships with different gzip wrappers
# (the official mirror's and Debian's differ), so the payload is what we pin.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


def cache_dir() -> Path:
    """Fashion-MNIST's folder in the per-user cache: $XDG_CACHE_HOME/cnnkit/fashion-mnist (default ~/.cache/cnnkit/...)."""
    return cache_root() / "fashion-mnist"


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete(folder: Path, keys=tuple(FILES)) -> bool:
    return all(_find_file(folder, FILES[key][0]) for key in keys)


def downloads_allowed() -> bool:
    """Whether $CNNKIT_OFFLINE allows a download: unset, empty or 0 allow it, 1 does not; any other
    value (``true``, ``yes``, ``2``) is a DataError rather than a guess."""
    value = os.environ.get("CNNKIT_OFFLINE", "").strip()
    if value not in ("", "0", "1"):
        raise DataError(f"CNNKIT_OFFLINE must be 1 (never download) or 0 (downloads allowed, the default). Received: {os.environ['CNNKIT_OFFLINE']!r}")
    return value != "1"


def _data_root() -> Path | None:
    """$CNNKIT_DATA as a folder, None when unset; a value naming no folder is a DataError, not ignored."""
    value = os.environ.get("CNNKIT_DATA", "")
    if not value:
        return None
    root = Path(value)
    if not root.is_dir():
        problem = "does not exist" if not os.path.lexists(root) else "is not a folder"
        raise DataError(f"CNNKIT_DATA names {value}, which {problem}; set it to the folder holding the Fashion-MNIST files, or unset it")
    return root


def _search_dirs() -> list[tuple[Path, bool]]:
    """(folder, chosen_by_user) in search order; folders under $CNNKIT_DATA are the user's choice."""
    dirs = []
    root = _data_root()
    if root is not None:
        dirs += [(root, True), (root / "fashion-mnist", True), (root / "FashionMNIST" / "raw", True)]
    dirs += [(cache_dir(), False), (DEBIAN_DIR, False), (Path("data") / "FashionMNIST" / "raw", False)]
    return dirs


def candidate_dirs() -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    return [folder for folder, _ in _search_dirs()]


def _find_dataset(explicit_dir: str | Path | None, download: bool, keys=tuple(FILES)) -> tuple[Path, bool]:
    """(folder holding the files of ``keys``, whether the user chose it) — see :func:`locate`."""
    allowed = downloads_allowed()  # a bad CNNKIT_OFFLINE is an error whether or not a download would happen
    if explicit_dir is not None:
        folder = Path(explicit_dir)
        if not folder.is_dir():
            raise DataError(f"data directory not found: {folder}")
        if not _complete(folder, keys):
            missing = [FILES[key][0] for key in keys if not _find_file(folder, FILES[key][0])]
            raise DataError(f"data directory {folder} lacks Fashion-MNIST files: {', '.join(missing)} (.gz or raw)")
        return folder, True
    for folder, chosen in _search_dirs():
        if _complete(folder, keys):
            return folder, chosen
    if not download:
        problem = "not found"
    elif not allowed:
        problem = "not found (downloads are off: CNNKIT_OFFLINE=1)"
    else:
        try:
            return fetch(cache_dir()), False
        except DataError as exc:
            problem = f"not found and the download failed ({exc})"
    raise DataError(
        f"Fashion-MNIST {problem}. Get it one of these ways: set CNNKIT_DATA to a folder with the four IDX files; "
        f"'apt-get install dataset-fashion-mnist' (puts them in {DEBIAN_DIR}); put them in {cache_dir()}; "
        f"use a torchvision-style ./data/FashionMNIST/raw folder; "
        f"or allow the download (unset CNNKIT_OFFLINE; CNNKIT_FASHION_MNIST_MIRROR picks the mirror)"
    )


def locate(explicit_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding the four IDX files (``.gz`` or raw).

    ``explicit_dir`` (a spec's ``data.dir``) is used as given. Otherwise the search order is
    $CNNKIT_DATA (itself, its ``fashion-mnist/`` and ``FashionMNIST/raw/``), the per-user cache
    ($XDG_CACHE_HOME/cnnkit/fashion-mnist), Debian's /usr/share/datasets/fashion-mnist and
    ./data/FashionMNIST/raw; if none is complete the files are downloaded into the cache (unless
    ``download`` is false or CNNKIT_OFFLINE=1). Failing all that, one DataError lists the ways to get them.
    """
    return _find_dataset(explicit_dir, download)[0]


def fetch(folder: Path, mirror: str | None = None, timeout: float = 30.0) -> Path:
    """Download the four .gz files from the mirror into ``folder``, verifying each before it is kept.

    The mirror is ``mirror``, else $CNNKIT_FASHION_MNIST_MIRROR, else the official one. Files already
    in ``folder`` are kept (they are verified when read). A file is renamed into place only after its
    sha256 matched, so a failed or partial download never leaves a file that looks complete.
    """
    mirror = mirror or os.environ.get("CNNKIT_FASHION_MNIST_MIRROR") or MIRROR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download folder {folder}: {exc.strerror or exc}") from None
    for stem, sha256 in FILES.values():
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        url = mirror.rstrip("/") + f"/{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except Exception as exc:  # URLError, HTTPError, timeouts, resets: all mean "not from here"
            raise DataError(f"cannot download {url}: {exc}") from None
        try:
            digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
        except (OSError, EOFError, zlib.error):
            digest = "not gzip data"
        if digest != sha256:
            raise DataError(f"{url}: sha256 mismatch (expected {sha256}, got {digest})")
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(payload)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
    return folder


def _read(folder: Path, key: str, verify: bool) -> np.ndarray:
    stem, sha256 = FILES[key]
    path = _find_file(folder, stem)
    data = read_bytes(path)
    if verify and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(
            f"{path}: contents differ from the official Fashion-MNIST (sha256 mismatch); "
            f"delete the file to fetch it again, or set data.dir to use your own IDX files"
        )
    array = parse_idx(data, str(path))
    if key.endswith("labels") and array.size and (array.min() < 0 or array.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels range over {array.min()}..{array.max()}, but Fashion-MNIST has {len(CLASSES)} classes (0..{len(CLASSES) - 1})")
    return array


def load_fashion_mnist(
    folder: str | Path | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    verify: bool | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> Dataset:
    """Load Fashion-MNIST (the first ``train_limit`` / ``test_limit`` examples when given).

    ``folder`` (a spec's ``data.dir``) skips the search of :func:`locate`. Verification against the
    official sha256 sums: ``verify=None`` (the default) checks files that cnnkit found or downloaded
    on its own (the cache, Debian's folder, ./data/FashionMNIST/raw) since those claim to be the
    official dataset, and trusts folders the user named (``folder`` or $CNNKIT_DATA), which may hold
    other data in the same format. ``True`` / ``False`` force it either way. Every file is still
    parsed strictly as IDX, and images and labels must agree in count, and labels must name a class.
    ``splits=("test",)`` reads (and needs) only the test files; the train arrays are then empty.
    """
    unknown = set(splits) - {"train", "test"}
    if unknown or not splits:
        raise ValueError(f"splits must be 'train' and/or 'test'. Received: {splits}")
    keys = tuple(key for key in FILES if key.split("_")[0] in splits)
    where, chosen_by_user = _find_dataset(folder, download=True, keys=keys)
    if verify is None:
        verify = not chosen_by_user
    arrays = {key: _read(where, key, verify) for key in keys}
    for split in ("train", "test"):
        if split not in splits:
            shape = arrays[f"{splits[0]}_images"].shape[1:]
            arrays[f"{split}_images"] = np.zeros((0, *shape), np.uint8)
            arrays[f"{split}_labels"] = np.zeros(0, np.uint8)
            continue
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{where}: {split} images {list(images.shape)} and labels {list(labels.shape)} do not match; expected (N, H, W) images and (N,) labels")
    return Dataset(
        arrays["train_images"][:train_limit],
        arrays["train_labels"][:train_limit].astype(np.int64),
        arrays["test_images"][:test_limit],
        arrays["test_labels"][:test_limit].astype(np.int64),
        list(CLASSES),
        str(where),
    )
