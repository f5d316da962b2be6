"""Read images: PNG/JPEG pictures (via Pillow) converted to a channel count and size, .npy arrays, or IDX files.

Pictures are read the way the model saw its training data (README "Predicting"): 16-bit images are
rescaled to 0..255 (not clipped), transparent pixels are composited over the model's background
(black for Fashion-MNIST), an animated image needs an explicit frame, and Pillow's warnings become
one line each. Only regular files are read; a FIFO or a device is refused by name.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..files import check_regular
from .arrays import read_npy
from .idx import read_idx

# Array dtypes that hold pixel values; complex, string, void, datetime and object arrays do not.
_PIXEL_KINDS = "biuf"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos")  # Pillow's filters, by the names a spec uses


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
    """Images from ``path`` as an array with a leading batch axis (see :func:`read_images_noted`)."""
    return read_images_noted(path, size, channels, invert, background, frame, warn)[0]


def read_images_noted(
    path: str | Path,
    size: tuple[int, int] | None = None,
    channels: int = 1,
    invert: bool = False,
    background: int = 0,
    frame: int | None = None,
    warn: Callable[[str], None] | None = None,
    resample: str = "bilinear",
) -> tuple[np.ndarray, str | None]:
    """Images from ``path`` with a leading batch axis, and what was done to a picture to fit (or None).

    A picture file gives one image, converted to grayscale (``channels=1``) or RGB and resized to
    ``size`` (H, W) when given. ``invert`` maps v -> 255 - v (Fashion-MNIST is light-on-dark).
    ``background`` is the gray level transparent pixels end up as (after ``invert``). ``frame``
    picks one frame of an animated image (required for those). ``warn`` receives one-line warnings
    (default: :class:`ImageWarning` through :mod:`warnings`). ``resample`` is the Pillow filter that
    resizes. The note says what was done to a picture, e.g. "RGBA 640x480 -> grayscale, resized to
    28x28", or is None.
    """
    path = Path(path)
    check_regular(path, "image file (PNG, JPEG, .npy or IDX)", DataError)
    warn = warn or (lambda message: warnings.warn(message, ImageWarning, stacklevel=4))
    suffix = path.suffix.lower()
    note = None
    if suffix == ".npy":
        array = read_npy(path)
        if array.dtype.kind not in _PIXEL_KINDS:
            raise DataError(f"{path}: a .npy of pixels must hold real numbers (bool, integer or float). Received: dtype {array.dtype}")
    elif suffix in (".gz", ".idx") or "idx" in path.name or "ubyte" in path.name:
        array = read_idx(path)
    else:
        image, note = _read_picture(path, size, channels, 255 - background if invert else background, frame, warn, resample)
        array = (image[0] if channels == 1 else image)[None]  # grayscale as (1, H, W), as it always was
    if array.size == 0:  # nothing to predict is not a success
        raise DataError(f"{path}: holds no images (shape {list(array.shape)})")
    if invert:
        array = 255 - array if array.dtype == np.uint8 else 255.0 - array
    return array, note


def read_images_for(model, path: str | Path, invert: bool = False, background: int = 0, frame: int | None = None,
                    warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, str | None]:
    """Images from ``path`` as ``model`` (a cnnkit Model) takes them, and the note of
    :func:`read_images_noted`: what `cnnkit predict` and the server's page read. Pictures are converted
    to the model's channel count and resized to its input size with the filter its image-folder
    training used (else bilinear)."""
    shape = model.input_shape
    # The image-folder source's resize filter, as the bundle wrote it: predicting resolves no data source.
    written = model.spec.to_dict().get("data")
    resample = written.get("resize") if isinstance(written, dict) else None
    resample = resample if resample in RESAMPLING else "bilinear"
    size, channels = (shape[-2:], shape[0]) if len(shape) == 3 else (None, 1)
    return read_images_noted(path, size=size, channels=channels, invert=invert, background=background, frame=frame, warn=warn, resample=resample)


def read_picture(path: Path, size: tuple[int, int] | None, channels: int, resample: str = "bilinear") -> np.ndarray:
    """One picture file as uint8 (C, H, W), read as for prediction (transparency over black), for datasets.

    Safe to call from several threads at once. Pillow's warnings go through :mod:`warnings` as they
    are; inside :func:`named_picture_warnings` they become one line naming the file.
    """
    with _reading_file(path):
        return _read_picture(path, size, channels, 0, None, None, resample)[0]


# The picture each thread is reading, so that a Pillow warning (which names no file) can be named.
_reading = threading.local()


@contextlib.contextmanager
def _reading_file(path: Path) -> Iterator[None]:
    _reading.path = path
    try:
        yield
    finally:
        _reading.path = None


@contextlib.contextmanager
def named_picture_warnings(warn: Callable[[str], None]) -> Iterator[None]:
    """While active, the warnings raised while :func:`read_picture` or :func:`picture_size` reads a
    file (Pillow's, in any thread) are collected; on exit each goes to ``warn`` as one line naming
    its file (e.g. a picture so large that Pillow suspects a decompression bomb). Other warnings are
    shown as usual.

    Enter it in the thread that starts the readers and leave it after they finish: the warning
    filters it sets are process-wide.
    """
    from PIL import Image

    caught: list[str] = []
    with warnings.catch_warnings():
        shown = warnings.showwarning  # the one in force outside (the CLI's, or Python's)
        warnings.simplefilter("always", Image.DecompressionBombWarning)

        def show(message, category, filename, lineno, file=None, line=None):
            path = getattr(_reading, "path", None)
            if path is None:
                return shown(message, category, filename, lineno, file, line)
            caught.append(_warning_line(path, category, message))  # list.append is atomic: threads may share it

        warnings.showwarning = show
        yield
    for line in caught:
        warn(line)


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _reading_file(path), Image.open(path) as img:
            return img.size
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image: {_one_line(exc)}") from None


def _read_picture(path: Path, size, channels: int, background: int, frame: int | None, warn, resample: str = "bilinear") -> tuple[np.ndarray, str | None]:
    """uint8 (C, H, W) and what was done to fit, or None when the picture had the mode and size already."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise DataError(f"pictures convert to 1 (grayscale) or 3 (RGB) channels; the model wants {channels}")
    mode, done = ("L" if channels == 1 else "RGB"), []

    with warnings.catch_warnings(record=True) if warn is not None else contextlib.nullcontext([]) as caught:
        if warn is not None:
            warnings.simplefilter("always")
        try:
            with Image.open(path) as img:
                original = f"{img.mode} {img.width}x{img.height}"
                if img.mode != mode:
                    done.append("grayscale" if mode == "L" else "RGB")
                img = _pick_frame(img, path, frame)
                img, scaled = _to_8bit(img, path)
                done.extend(scaled)
                img = _composite(img, background)
                img = img.convert(mode)
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), getattr(Image.Resampling, resample.upper()))
                    done.append(f"resized to {size[1]}x{size[0]}")
                array = np.asarray(img, dtype=np.uint8)
        except DataError:  # ours, already one line naming the file (a DataError is a ValueError too)
            raise
        except UnidentifiedImageError:
            raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG, ... or .npy / IDX)") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # Pillow's ways to say "broken"
            raise DataError(f"{path}: cannot read image: {_one_line(exc)}") from None
    for w in caught:
        warn(_warning_line(path, w.category, w.message))
    note = f"{original} -> {', '.join(done)}" if done else None
    return (array[None] if channels == 1 else array.transpose(2, 0, 1)), note


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


def _to_8bit(img, path: Path):
    """16- and 32-bit images as 8-bit grayscale, and what was done (Pillow's convert would clip or
    truncate them: a float 0.8 became black, an int 70,000 white).

    Integer images are scaled by their bit depth (16-bit: 65535 -> 255); float images in 0..1 are
    scaled to 0..255 and those in 0..255 kept. Values outside those ranges have no scale cnnkit can
    tell, and are refused rather than clipped.
    """
    from PIL import Image

    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return img, []
    values = np.asarray(img).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F":
        if not np.isfinite(values).all():
            raise DataError(f"{path}: a floating-point image holding NaN or infinity")
        if low < 0 or high > 255:
            raise DataError(f"{path}: a floating-point image with values {low:g}..{high:g}; cnnkit reads float pictures "
                            f"on a 0..1 or a 0..255 scale, so rescale it to one of those")
        top, done = (1.0, ["values 0..1 scaled to 0..255"]) if high <= 1 else (255.0, [])
    elif low < 0 or high > 65535:
        raise DataError(f"{path}: a 32-bit integer image with values {low:,.0f}..{high:,.0f}, beyond 16 bits; cnnkit cannot "
                        f"tell its scale, so save it with 8 or 16 bits per pixel")
    elif img.mode == "I":
        # Older Pillow opens a 16-bit PNG as "I"; other formats' "I" images count as 16-bit once a value needs it.
        top, done = (65535.0 if img.format == "PNG" or high > 255 else 255.0), []
    else:
        top, done = 65535.0, []
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L"), done


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


def _warning_line(path: Path, category: type[Warning], message) -> str:
    from PIL import Image

    if issubclass(category, Image.DecompressionBombWarning):
        return f"{path}: a very large image ({_one_line(message)}); reading it anyway"
    return f"{path}: {_one_line(message)}"


def _one_line(message) -> str:
    return " ".join(str(message).split())
