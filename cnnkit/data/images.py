"""Read images: PNG/JPEG pictures (via Pillow) converted to a channel count and size, .npy arrays, or IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .idx import read_idx

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos")  # Pillow's filters, by the names a spec uses


def read_images(path: str | Path, size: tuple[int, int] | None = None, channels: int = 1, invert: bool = False) -> np.ndarray:
    """Images from ``path`` as an array with a leading batch axis (see :func:`read_images_noted`)."""
    return read_images_noted(path, size, channels, invert)[0]


def read_images_noted(path: str | Path, size: tuple[int, int] | None = None, channels: int = 1, invert: bool = False,
                      resample: str = "bilinear") -> tuple[np.ndarray, str | None]:
    """Images from ``path`` with a leading batch axis, and what was done to a picture to fit (or None).

    A picture file gives one image, converted to grayscale (``channels=1``) or RGB and resized to
    ``size`` (H, W) when given (with the Pillow filter ``resample``). ``invert`` maps v -> 255 - v
    (Fashion-MNIST is light-on-dark). The note says what was done to the picture, e.g.
    "RGBA 640x480 -> grayscale, resized to 28x28", or is None.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give image files (PNG, JPEG, .npy or IDX)")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix = path.suffix.lower()
    note = None
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy array: {exc}") from None
    elif suffix in (".gz", ".idx") or "idx" in path.name or "ubyte" in path.name:
        array = read_idx(path)
    else:
        image, note = read_picture(path, size, channels, resample)
        array = (image[0] if channels == 1 else image)[None]  # grayscale as (1, H, W), as it always was
    if invert:
        array = 255 - array if array.dtype == np.uint8 else 255.0 - array
    return array, note


def read_picture(path: Path, size: tuple[int, int] | None, channels: int, resample: str = "bilinear") -> tuple[np.ndarray, str | None]:
    """One picture as uint8 (C, H, W), with ``channels`` 1 (grayscale) or 3 (RGB), resized to ``size`` (H, W) if given.

    Returns the array and what was done to fit ("RGBA 640x480 -> grayscale, resized to 28x28"), or
    None when the picture already had the mode and size. A corrupt or truncated file is a DataError naming it.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise DataError(f"pictures convert to 1 (grayscale) or 3 (RGB) channels; the model wants {channels}")
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            done = []
            original = f"{img.mode} {img.width}x{img.height}"
            if img.mode != mode:
                img = img.convert(mode)
                done.append("grayscale" if mode == "L" else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), getattr(Image.Resampling, resample.upper()))
                done.append(f"resized to {size[1]}x{size[0]}")
            array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG, ... or .npy / IDX)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's ways to say "broken"
        raise DataError(f"{path}: cannot read image: {exc}") from None
    note = f"{original} -> {', '.join(done)}" if done else None
    return (array[None] if channels == 1 else array.transpose(2, 0, 1)), note


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from None
