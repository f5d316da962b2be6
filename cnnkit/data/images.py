"""Read images to predict on: PNG/JPEG (via Pillow), .npy arrays, or IDX files.

Pictures are read the way the model saw its training data (README "Predicting"): 16-bit images are
rescaled to 0..255 (not clipped), transparent pixels are composited over the model's background
(black for Fashion-MNIST), an animated image needs an explicit frame, and Pillow's warnings become
one line each. Only regular files are read; a FIFO or a device is refused by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import check_regular
from .idx import read_idx

# Array dtypes that hold pixel values; complex, string, void, datetime and object arrays do not.
_PIXEL_KINDS = "biuf"


class ImageWarning(UserWarning):
    """Something about an input image worth knowing that does not stop the prediction."""


def read_images(
    path: str | Path,
    size: tuple[int, int] | None = None,
    channels: int = 1,
    invert: bool = False,
    background: int = 0,
    frame: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Images from ``path`` as an array with a leading batch axis.

    A picture file gives one image, converted to grayscale (``channels=1``) or RGB and resized to
    ``size`` (H, W) when given. ``invert`` maps v -> 255 - v (Fashion-MNIST is light-on-dark).
    ``background`` is the gray level transparent pixels end up as (after ``invert``). ``frame``
    picks one frame of an animated image (required for those). ``warn`` receives one-line warnings
    (default: :class:`ImageWarning` through :mod:`warnings`).
    """
    path = Path(path)
    check_regular(path, "image file (PNG, JPEG, .npy or IDX)", DataError)
    warn = warn or (lambda message: warnings.warn(message, ImageWarning, stacklevel=3))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy array: {exc}") from None
        if array.dtype.kind not in _PIXEL_KINDS:
            raise DataError(f"{path}: a .npy of pixels must hold real numbers (bool, integer or float). Received: dtype {array.dtype}")
    elif suffix in (".gz", ".idx") or "idx" in path.name or "ubyte" in path.name:
        array = read_idx(path)
    else:
        array = _read_picture(path, size, channels, 255 - background if invert else background, frame, warn)
    if invert:
        array = 255 - array if array.dtype == np.uint8 else 255.0 - array
    return array


def _read_picture(path: Path, size, channels: int, background: int, frame: int | None, warn) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(path) as img:
                img = _pick_frame(img, path, frame)
                img = _to_8bit(img)
                img = _composite(img, background)
                img = img.convert("L" if channels == 1 else "RGB")
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except UnidentifiedImageError:
            raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG, ... or .npy / IDX)") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's ways to say "broken"
            raise DataError(f"{path}: cannot read image: {_one_line(exc)}") from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            warn(f"{path}: a very large image ({_one_line(w.message)}); reading it anyway")
        else:
            warn(f"{path}: {_one_line(w.message)}")
    return array[None] if channels == 1 else array.transpose(2, 0, 1)[None]


def _pick_frame(img, path: Path, frame: int | None):
    frames = getattr(img, "n_frames", 1)
    if frame is None:
        if frames > 1:
            raise DataError(f"{path} is an animated image with {frames} frames; choose one with --frame N (0..{frames - 1})")
        return img
    if frame >= frames:
        raise DataError(f"{path} has {frames} frame{'s' if frames != 1 else ''}; --frame must be 0..{frames - 1}. Received: {frame}")
    img.seek(frame)
    return img


def _to_8bit(img):
    """16- and 32-bit integer images scaled to 0..255 by their bit depth (Pillow's convert would clip)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        top = 65535
    elif img.mode == "I":
        # Older Pillow opens a 16-bit PNG as "I"; other formats' "I" images count as 16-bit once a value needs it.
        top = 65535 if img.format == "PNG" or np.asarray(img).max(initial=0) > 255 else 255
    else:
        return img
    values = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def _composite(img, background: int):
    """Transparent pixels blended over a gray ``background`` (0..255), as the model's data would show them."""
    from PIL import Image

    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode in ("PA", "La"):
        img = img.convert("RGBA" if img.mode == "PA" else "LA")
    if img.mode not in ("RGBA", "LA", "RGBa", "La"):
        return img
    rgba = img.convert("RGBA")
    ground = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(ground, rgba).convert("RGB")


def _one_line(message) -> str:
    return " ".join(str(message).split())
