"""Predicting on image files, as `cnnkit predict` does: each file read the way the model saw its data,
one result per image, and a file that cannot be used named in one line while the others still get
their results."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, DataWarning
from . import inputs


@dataclass
class FilePredictions:
    """``results``: per image, ``{"input", "top": [{"class", "index", "probability"}], "converted"?}``;
    ``errors``: one line per file that could not be predicted, each naming the file."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def predict_files(
    model,
    paths: Iterable[str | Path],
    *,
    top: int = 1,
    invert: bool = False,
    background: int = 0,
    frame: int | None = None,
    warn: Callable[[str], None] | None = None,
    tta: bool = True,
) -> FilePredictions:
    """The ``top`` classes of every image in ``paths`` (pictures, .npy arrays, IDX files).

    Pictures are converted to the model's channels and size, resized with the filter its
    image-folder training used (else bilinear). Arrays may be channels first or channels last.
    A file that is unreadable or does not fit the model becomes a line in ``errors`` naming it;
    the files after it are still predicted. ``warn`` receives one-line warnings (a picture's
    oddities, float pixels that look scaled to 0..1 already); default: :class:`DataWarning`.
    ``tta=False`` classifies each image without the bundle's test-time augmentation.
    """
    from ..data.images import read_images_for

    warn = warn or (lambda message: warnings.warn(DataWarning(message), stacklevel=3))
    divide = model.spec.input.preprocess.divide
    found = FilePredictions()
    for path in paths:
        try:
            array, converted = read_images_for(model, path, invert=invert, background=background, frame=frame, warn=warn)
            problem = inputs.prescaled_warning(array, divide, source=str(path))
            proba = model.predict_proba(model.preprocess(array), preprocessed=True, tta=tta)
        except DataError as exc:  # about this file; anything else (a bad setting, a layer) stops the command
            message = str(exc)
            found.errors.append(message if str(path) in message else f"{path}: {message}")
            continue
        if problem:
            warn(problem)
        for i, row in enumerate(proba):
            best = np.argsort(-row)[:top]
            name = str(path) if len(proba) == 1 else f"{path}[{i}]"
            result = {"input": name, "top": [{"class": model.classes[j], "index": int(j), "probability": float(row[j])} for j in best]}
            if converted is not None:
                result["converted"] = converted
            found.results.append(result)
    return found
