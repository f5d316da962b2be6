"""The page's helper route: an uploaded file, read exactly as `cnnkit predict` reads it, returned as a
ready binary inference request that the page then posts, unchanged, to the model's infer route.

Why the server reads the file and not the browser: a browser decodes only the web's picture
formats and resizes with its own filter, so its pixels (and sometimes its answer) would differ from
`cnnkit predict`'s; here the one reader (``cnnkit.data.images.read_images_for``: Pillow with the
model's resize filter, 16-bit scaling, transparency over black, .npy and IDX files) makes the pixels,
and the answer still comes from the protocol's own infer route.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np

from ..data.images import read_images_for
from ..errors import DataError
from .models import ServedModel
from .protocol import HEADER_LENGTH, INPUT, OUTPUT, RequestError

TOP = 5  # classes the page shows per model
NOTES = "cnnkit-notes"  # response header: JSON list of what was done to the file, and warnings
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def query_flag(query, key: str) -> bool:
    """A query parameter that is 0 or 1 (default 0); anything else is a 400 naming it (``yes`` once meant 0)."""
    value = query.get(key, "0")
    if value not in ("0", "1"):
        raise RequestError(f"query parameter {key} must be 0 or 1. Received: {value[:40]!r}")
    return value == "1"


def check_upload_type(content_type: str | None) -> None:
    """The file comes as the body itself; a multipart form would be read as a broken picture (415)."""
    if (content_type or "").strip().lower().startswith("multipart/"):
        raise RequestError("send the file itself as the request body (curl --data-binary @FILE), not as a multipart form", 415)


def inference_request(served: ServedModel, data: bytes, filename: str, invert: bool = False) -> tuple[bytes, dict[str, str]]:
    """A binary inference request for ``served`` holding the images of the uploaded file, and its headers.

    The file is written to a private temporary folder under a sanitised form of ``filename`` (its
    suffix tells the reader a .npy or an IDX file from a picture) and read with frame 0 of an
    animated image. Errors name the file as the client called it.
    """
    name = _UNSAFE.sub("_", Path(filename).name)[-100:].lstrip(".") or "upload"
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-serve-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            array, converted = read_images_for(served.model, path, invert=invert, frame=0, warn=notes.append)
        except DataError as exc:
            raise RequestError(str(exc).replace(str(path), name)) from None
    notes = [note.replace(str(path), name) for note in ([converted] if converted else []) + notes]
    array = _as_batch(array, served, name)
    datatype = "UINT8" if array.dtype == np.uint8 else "FP32"
    array = np.ascontiguousarray(array, np.uint8 if datatype == "UINT8" else "<f4")
    header = json.dumps({"inputs": [{"name": INPUT, "datatype": datatype, "shape": list(array.shape), "parameters": {"binary_data_size": array.nbytes}}],
                         "outputs": [{"name": OUTPUT, "parameters": {"classification": min(TOP, len(served.signature.classes))}}]}).encode()
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header)), NOTES: json.dumps([n[:300] for n in notes[:5]])}
    return header + array.tobytes(), headers


def _as_batch(array: np.ndarray, served: ServedModel, name: str) -> np.ndarray:
    """One image gets a batch axis, as ``Model.predict_proba`` gives it; a shape the model cannot take is refused."""
    shapes = served.signature.shapes()
    if any(array.shape == tuple(s[1:]) for s in shapes):
        array = array[None]
    if not any(array.ndim == len(s) and list(array.shape[1:]) == s[1:] for s in shapes):
        accepted = " or ".join(str(s[1:]) for s in shapes)
        raise RequestError(f"{name} holds images of shape {list(array.shape)}; model {served.name!r} takes images of shape {accepted}")
    return array
