"""What a model takes as images: the array layouts ``Model.preprocess`` accepts, and a look at whether
their pixel range matches the spec's preprocessing.

Layouts, for input.shape (C, H, W): a batch (N, C, H, W); for grayscale (C = 1) also (N, H, W); and
channels last, (N, H, W, C), what ``np.asarray`` of a Pillow image gives. Each may also be one image
without the N axis. An array that fits both channels-first and channels-last (C = H = W) is read
channels first, as the npz dataset source reads it.

The pixel range: ``input.preprocess`` divides raw pixel values (0..255 for 8-bit pictures) by
``divide``. Data on another scale (sklearn's digits, 0..16; floats already in 0..1; 16-bit values)
still trains and predicts, badly and silently, so it is worth a warning, not an error: data on an
unusual scale may be meant.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

# The pixel range is worth a warning when the largest value divided by input.preprocess.divide is
# further than this factor from 1 (digits 0..16 / 255 = 0.063; floats in 0..1 / 255 = 0.004).
RANGE_FACTOR = 8
# Training images looked at for their range: evenly spaced, so a memory-mapped set is not read whole.
RANGE_SAMPLE = 4096


def as_batch(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """``images`` as a channels-first batch (N, *input_shape) (a view where possible), or a DataError
    naming the layouts accepted and the shape received."""
    shape = tuple(input_shape)
    layouts: list[tuple[tuple[int, ...], bool]] = [(shape, False)]  # (per-image shape, channels last)
    if len(shape) == 3:
        channels, height, width = shape
        if channels == 1:
            layouts.append(((height, width), False))
        layouts.append(((height, width, channels), True))
    for per_image, channels_last in layouts:
        for batch in (images, images[None] if images.shape == per_image else None):
            if batch is not None and batch.ndim == len(per_image) + 1 and batch.shape[1:] == per_image:
                if channels_last:
                    return np.moveaxis(batch, -1, 1)  # (N, H, W, C) -> (N, C, H, W)
                return batch.reshape(len(batch), *shape)  # (N, H, W) -> (N, 1, H, W)
    forms = [f"(N, {', '.join(map(str, per_image))})" for per_image, _ in layouts]
    accepted = forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or channels last {forms[-1]}"
    raise DataError(f"images must have shape {accepted} for input.shape {list(shape)}, or be one such image without N. "
                    f"Received: {list(images.shape)}")


def _number(value: float) -> str:
    """A pixel value as a person writes it: 16, 65535, 0.8627."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _largest_magnitude(images: np.ndarray) -> float:
    if not images.size:
        return 0.0
    return max(abs(float(images.max())), abs(float(images.min())))


def training_range_warning(images: np.ndarray, divide: float, where: str = "the training images") -> str | None:
    """A warning when raw training ``images`` (uint8 or float) are on another scale than
    ``input.preprocess.divide`` expects, judged from an evenly spaced sample; None when they match."""
    step = max(1, len(images) // RANGE_SAMPLE)
    top = _largest_magnitude(images[::step][:RANGE_SAMPLE])
    if top == 0 or 1 / RANGE_FACTOR <= top / divide <= RANGE_FACTOR:
        return None
    return (f"{where} go up to {_number(top)}, but input.preprocess divides by {_number(divide)}, so the model sees values up to "
            f"{top / divide:.3g} where about 1 is meant; if {_number(top)} is the data's full scale, set input.preprocess.divide to {_number(top)}")


def prescaled_warning(images: np.ndarray, divide: float, source: str | None = None) -> str | None:
    """A warning when float ``images`` given as raw pixels look scaled to 0..1 already (largest value
    at most 1) while the spec divides raw pixels by ``divide`` (255 for 8-bit pictures); else None.
    Integer images (what pictures decode to) are never warned about: a dark picture is a picture.
    ``source`` (a file name) starts the message."""
    if images.dtype.kind != "f" or divide / RANGE_FACTOR < 1:
        return None
    top = _largest_magnitude(images)
    if not 0 < top <= 1:  # NaN too: preprocess refuses it in one line of its own
        return None
    return (f"{source + ': the ' if source else ''}images are floats up to {_number(top)}, but the model divides raw pixel values by {_number(divide)} (input.preprocess): "
            f"pass pixel values on the training data's scale (e.g. x * {_number(divide)}), or preprocessed=True for arrays already in model units")
