"""Read images to predict on: PNG/JPEG (via Pillow), .npy arrays, or IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .idx import read_idx


def read_images(path: str | Path, size: tuple[int, int] | None = None, channels: int = 1, invert: bool = False) -> np.ndarray:
    """Images from ``path`` as an array with a leading batch axis.

    A picture file gives one image, converted to grayscale (``channels=1``) or RGB and resized to
    ``size`` (H, W) when given. ``invert`` maps v -> 255 - v (Fashion-MNIST is light-on-dark).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give image files (PNG, JPEG, .npy or IDX)")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy array: {exc}") from None
    elif suffix in (".gz", ".idx") or "idx" in path.name or "ubyte" in path.name:
        array = read_idx(path)
    else:
        array = _read_picture(path, size, channels)
    if invert:
        array = 255 - array if array.dtype == np.uint8 else 255.0 - array
    return array


def _read_picture(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG, ... or .npy / IDX)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's ways to say "broken"
        raise DataError(f"{path}: cannot read image: {exc}") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)[None]
