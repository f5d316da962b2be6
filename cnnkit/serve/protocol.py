"""The Open Inference Protocol (KServe V2 REST) for one cnnkit model: metadata, requests checked
before any allocation, responses as JSON or with the binary tensor extension.

No web framework here: requests arrive as bytes and leave as bytes, so every rule can be tested
without a server. A request that breaks a rule raises :class:`RequestError` with the HTTP status to
answer and a one-line message naming where in the request the problem is and what was received.

The model's one input, ``input``, takes raw pixels as UINT8 or FP32 of shape ``[N, *input.shape]``
(or ``[N, H, W]`` for a one-channel model); ``Model.predict_proba`` applies the bundle's own
preprocessing. Its one output, ``probabilities``, is FP32 ``[N, classes]``; the classification
extension (``"classification": k`` in an output's parameters) returns the top ``k`` classes as BYTES
``"<probability>:<index>:<class name>"`` of shape ``[N, k]`` instead (``k = 0``: no classification, the
probabilities, as tritonclient's ``class_count=0`` means).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CnnkitError
from ..files import looks_like

INPUT, OUTPUT = "input", "probabilities"
VERSION = "1"  # a bundle is one version of a model
PLATFORM = "cnnkit"
EXTENSIONS = ["binary_tensor_data", "classification"]
DTYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}
HEADER_LENGTH = "inference-header-content-length"
FP32_MAX = float(np.finfo(np.float32).max)


class RequestError(CnnkitError):
    """A request the server refuses: ``status`` is the HTTP status, the message one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def counted(n: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``, ``1,000 bytes``: a count with its noun in the right number."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _show(value, limit: int = 80) -> str:
    """A received value for an error message: JSON, cut at ``limit`` characters (a hostile shape may be huge)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Signature:
    """What a served model takes and gives: its name, input shape (C, H, W) and class names."""

    name: str
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, name: str, model) -> Signature:
        return cls(name, tuple(model.input_shape), tuple(model.classes))

    def shapes(self) -> list[list[int]]:
        """The input shapes accepted, -1 for the batch: [-1, C, H, W], and [-1, H, W] when C is 1."""
        shapes = [[-1, *self.input_shape]]
        if len(self.input_shape) == 3 and self.input_shape[0] == 1:
            shapes.append([-1, *self.input_shape[1:]])
        return shapes

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [VERSION], "platform": PLATFORM,
                "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": self.shapes()[0]}],
                "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, len(self.classes)]}]}


@dataclass(frozen=True)
class Output:
    """One requested output: as binary data or JSON, and the top-k classes (0 = the probabilities)."""

    binary: bool = False
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A checked inference request: the images as an array, the request id, the outputs wanted."""

    images: np.ndarray
    id: str | None
    outputs: tuple[Output, ...]


def _refuse_constant(name: str):
    raise RequestError(f"malformed JSON: {name} is not a JSON number (tensor data must be finite)")


def check_content_type(content_type: str | None, name: str) -> None:
    """Refuse (415) what an inference route cannot take by its Content-Type alone: a picture or a form.

    Any other type is read as JSON: clients label it variously (curl -d says form-urlencoded).
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind.startswith("image/"):
        raise _not_a_request(f"an image file (Content-Type: {kind[:40]})", name)
    if kind.startswith("multipart/"):
        raise _not_a_request(f"a multipart upload (Content-Type: {kind[:40]})", name)


def _not_a_request(what: str, name: str) -> RequestError:
    return RequestError(f"this route takes an inference request (JSON tensors, see GET /v2/models/{name}), not {what}; "
                        f"POST the file itself to /page/request/{name}, which answers with the inference request for it, or use `cnnkit predict`", 415)


def _json_object(text: bytes, what: str, name: str | None = None) -> dict:
    """``text`` as a JSON object; ``name``: the model an inference request is for, named in the advice."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(text, exc, what, name) from None
    except RecursionError:
        raise RequestError(f"malformed JSON in the {what}: nested too deeply") from None
    if not isinstance(value, dict):
        raise RequestError(f"the {what} must be a JSON object. Received: {type(value).__name__ if value is not None else 'null'}")
    return value


def _malformed(text: bytes, exc: ValueError, what: str, name: str | None) -> RequestError:
    """Why ``text`` is no JSON: for an inference request, a picture or an array file sent as it is, or
    JSON followed by binary data without the header that says where the JSON ends; else the parser's words."""
    kind = looks_like(text[:16]) if name else None
    if kind:
        return _not_a_request(kind, name)
    json_bytes = _json_prefix(text) if name else None
    if json_bytes is not None:
        return RequestError(f"the {what} is {counted(json_bytes, 'byte')} of JSON followed by {counted(len(text) - json_bytes, 'more byte')}; "
                            f"binary tensor data after the JSON needs the Inference-Header-Content-Length header (the JSON's length in bytes)")
    if isinstance(exc, UnicodeDecodeError):
        return RequestError(f"malformed JSON in the {what}: not UTF-8 text (byte {exc.start:,} is 0x{text[exc.start]:02x})")
    return RequestError(f"malformed JSON in the {what}: {exc.msg} at line {exc.lineno} column {exc.colno}")


def _json_prefix(text: bytes) -> int | None:
    """The length in bytes of a JSON object that starts ``text`` and is followed by other bytes, else None."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:  # binary data after the JSON: the JSON is in the part before it
        decoded = text[: exc.start].decode("utf-8")
    try:
        value, end = json.JSONDecoder().raw_decode(decoded, len(decoded) - len(decoded.lstrip()))
    except (ValueError, RecursionError):
        return None
    used = len(decoded[:end].encode("utf-8"))
    return used if isinstance(value, dict) and used < len(text) else None


def _parameters(holder: dict, where: str) -> dict:
    params = holder.get("parameters", {})
    if not isinstance(params, dict):
        raise RequestError(f"{where}.parameters must be an object. Received: {_show(params)}")
    return params


def _flag(params: dict, key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"{where}.parameters.{key} must be true or false. Received: {_show(value)}")
    return value


def _count(value, where: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise RequestError(f"{where} must be an integer >= {low}. Received: {_show(value)}")
    return value


def parse_infer(body: bytes, header_length: str | None, signature: Signature) -> InferRequest:
    """Check an inference request (JSON, or JSON plus binary tensors) against ``signature``.

    Everything a tensor's size depends on (shape against the model, shape against the data's length,
    datatype) is checked before the tensor is built; its values (range, finiteness) right after.
    A picture sent as it is (told by its first bytes) is a 415 saying where it belongs.
    """
    binary = b""
    if header_length is not None:
        if not header_length.strip().isdecimal() or int(header_length) > len(body):
            raise RequestError(f"Inference-Header-Content-Length must be a byte count within the {len(body):,}-byte body. Received: {header_length[:40]!r}")
        binary, body = memoryview(body)[int(header_length):], body[: int(header_length)]
    request = _json_object(body, "request", signature.name)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"id must be a string. Received: {_show(request_id)}")
    binary_output = _flag(_parameters(request, "request"), "binary_data_output", "request")
    images = _input(request.get("inputs"), binary, signature)
    return InferRequest(images, request_id, _outputs(request.get("outputs"), binary_output, signature))


def _input(inputs, binary, signature: Signature) -> np.ndarray:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(f"inputs must be a non-empty list of tensors. Received: {_show(inputs)}")
    if len(inputs) != 1:
        raise RequestError(f"model {signature.name!r} has one input, {INPUT!r}. Received: {counted(len(inputs), 'input')}")
    tensor, where = inputs[0], "inputs[0]"
    if not isinstance(tensor, dict):
        raise RequestError(f"{where} must be an object. Received: {_show(tensor)}")
    if tensor.get("name") != INPUT:
        raise RequestError(f"{where}.name must be {INPUT!r} (the model's one input). Received: {_show(tensor.get('name'))}")
    datatype = tensor.get("datatype")
    if datatype not in DTYPES:
        raise RequestError(f"{where}.datatype must be UINT8 or FP32 (raw pixels). Received: {_show(datatype)}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) \
            or not any(len(shape) == len(s) and shape[1:] == s[1:] for s in signature.shapes()) or shape[0] < 1:
        accepted = " or ".join(f"[{', '.join(['N', *map(str, s[1:])])}]" for s in signature.shapes())  # N, not metadata's -1
        raise RequestError(f"{where}.shape must be {accepted} with N >= 1 for model {signature.name!r}. Received: {_show(shape)}")
    count, dtype = math.prod(shape), DTYPES[datatype]
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise RequestError(f"{where} has both data and parameters.binary_data_size; send one")
        size = _count(size, f"{where}.parameters.binary_data_size")
        if size != len(binary):
            raise RequestError(f"{where}.parameters.binary_data_size is {counted(size, 'byte')} but the JSON header is followed by {counted(len(binary), 'byte')}")
        if size != count * dtype.itemsize:
            raise RequestError(f"{where}: shape {_show(shape)} of {datatype} needs {counted(count * dtype.itemsize, 'byte')}. Received: {counted(size, 'byte')}")
        array = np.frombuffer(binary, dtype).reshape(shape)
    else:
        if len(binary):
            raise RequestError(f"the JSON header is followed by {counted(len(binary), 'byte')} but no input has parameters.binary_data_size")
        array = _from_json(tensor.get("data"), shape, count, datatype, where)
    if datatype == "FP32" and not np.isfinite(array).all():
        raise RequestError(f"{where}'s binary data must be finite numbers. Received: NaN or infinity in a tensor of shape {_show(shape)}")
    return array


def _from_json(data, shape: list[int], count: int, datatype: str, where: str) -> np.ndarray:
    """A tensor from JSON data: flat in row-major order, or nested exactly as ``shape``."""
    if not isinstance(data, list):
        raise RequestError(f"{where}.data must be a list of numbers (or binary data). Received: {_show(data)}")
    flat = data
    if data and type(data[0]) is list:  # nested: every level must have the length the shape gives
        for depth in range(len(shape) - 1):
            if len(flat) != math.prod(shape[: depth + 1]) or not all(type(row) is list and len(row) == shape[depth + 1] for row in flat):
                raise RequestError(f"{where}.data is nested but not as the shape {_show(shape)} (nest it fully or send it flat)")
            flat = [value for row in flat for value in row]
    if len(flat) != count:
        raise RequestError(f"{where}: shape {_show(shape)} needs {counted(count, 'value')}. Received: {counted(len(flat), 'value')}")
    kinds = set(map(type, flat))
    if datatype == "UINT8":
        if kinds != {int}:
            raise RequestError(f"{where}.data must hold integers 0..255 for UINT8. Received: {_kind_names(kinds - {int})}")
        low, high = min(flat), max(flat)
        if low < 0 or high > 255:
            raise RequestError(f"{where}.data must hold integers 0..255 for UINT8. Received: values from {_show(low)} to {_show(high)}")
        array = np.array(flat, dtype=np.uint8)
    else:
        if not kinds <= {int, float}:
            raise RequestError(f"{where}.data must hold numbers for FP32. Received: {_kind_names(kinds - {int, float})}")
        try:
            array = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise RequestError(f"{where}.data must be finite numbers within FP32's range (±3.4e38). Received: an integer too large") from None
        beyond = np.flatnonzero(~(np.abs(array) <= FP32_MAX))  # 1e39 is a finite float64 but FP32's infinity; 1e400 parses as inf
        if beyond.size:
            raise RequestError(f"{where}.data must be finite numbers within FP32's range (±3.4e38). Received: {flat[beyond[0]]!r:.40} at flat index {beyond[0]:,}")
        array = array.astype(np.float32)
    return array.reshape(shape)


def _kind_names(kinds: set) -> str:
    names = {bool: "true/false", str: "strings", list: "lists", dict: "objects", type(None): "null", float: "fractions", int: "integers"}
    return ", ".join(sorted(names.get(k, k.__name__) for k in kinds))


def _outputs(outputs, binary_default: bool, signature: Signature) -> tuple[Output, ...]:
    if outputs is None:
        return (Output(binary=binary_default),)
    if not isinstance(outputs, list) or not outputs:
        raise RequestError(f"outputs must be a non-empty list (or left out for all outputs). Received: {_show(outputs)}")
    if len(outputs) != 1:
        raise RequestError(f"model {signature.name!r} has one output, {OUTPUT!r}. Received: {counted(len(outputs), 'output')}")
    requested, where = outputs[0], "outputs[0]"
    if not isinstance(requested, dict) or requested.get("name") != OUTPUT:
        raise RequestError(f"{where}.name must be {OUTPUT!r} (the model's one output). Received: {_show(requested.get('name') if isinstance(requested, dict) else requested)}")
    params = _parameters(requested, where)
    top = _count(params.get("classification", 0), f"{where}.parameters.classification")
    if top > len(signature.classes):
        raise RequestError(f"{where}.parameters.classification asks for {top} classes; model {signature.name!r} has {len(signature.classes)}")
    binary = _flag(params, "binary_data", where) if "binary_data" in params else binary_default
    return (Output(binary=binary, classification=top),)


def encode_response(signature: Signature, request: InferRequest, proba: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header followed by binary tensors."""
    outputs, blobs = [], []
    for wanted in request.outputs:
        if wanted.classification:
            tensor = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(proba), wanted.classification]}
            labels = classify(proba, wanted.classification, signature.classes)
            if wanted.binary:
                blobs.append(b"".join(struct.pack("<I", len(b)) + b for b in (label.encode() for label in labels)))
            else:
                tensor["data"] = labels
        else:
            tensor = {"name": OUTPUT, "datatype": "FP32", "shape": list(proba.shape)}
            if wanted.binary:
                blobs.append(np.ascontiguousarray(proba, "<f4").tobytes())
            else:
                tensor["data"] = proba.ravel().tolist()
        if wanted.binary:
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        outputs.append(tensor)
    response = {"model_name": signature.name, "model_version": VERSION}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def repository_index(body: bytes, names) -> list[dict]:
    """Triton's model repository index (``POST /v2/repository/index``): every served model, each ready.

    The body is empty or ``{"ready": true|false}`` (only ready models, or all: the same list here).
    """
    if body.strip():
        ready = _json_object(body, "repository index request").get("ready", False)
        if not isinstance(ready, bool):
            raise RequestError(f"ready must be true or false. Received: {_show(ready)}")
    return [{"name": name, "version": VERSION, "state": "READY", "reason": ""} for name in names]


def classify(proba: np.ndarray, top: int, classes: tuple[str, ...]) -> list[str]:
    """The classification extension's strings, row by row: the ``top`` most likely classes, best first."""
    best = np.argsort(-proba, axis=1, kind="stable")[:, :top]
    return [f"{row[i]:f}:{i}:{classes[i]}" for row, indices in zip(proba, best) for i in indices]
