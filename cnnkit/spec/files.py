"""Spec JSON as it arrives: files read safely, `--set` overrides, and the structural limits on both.

Everything here works on plain parsed JSON, before pydantic sees it, so that hostile input (a FIFO,
/dev/zero, 100,000 nested brackets, a million layers, a key given twice, NaN) fails at once with one
SpecError naming the JSON path. The limits are stated in README "The spec format".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..files import read_regular

MAX_SPEC_BYTES = 1 << 20  # a spec file; the seed spec is under 1 KiB
MAX_NESTING = 32  # objects and arrays inside each other; a real spec nests about 4 deep
MAX_LAYERS = 1000


def json_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('layers', 3, 'kernel_size') -> 'layers[3].kernel_size'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_override(assignment: str) -> tuple[list[str | int], Any]:
    """'train.epochs=1' -> (['train', 'epochs'], 1); 'layers[0].filters=8' or 'layers.0.filters=8' also work.

    The value is parsed as JSON; text that is not JSON is taken as a string.
    """
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise SpecError(f"--set expects PATH=VALUE, like train.epochs=1. Received: {assignment!r}")
    parts: list[str | int] = []
    for token in path.strip().replace("[", ".").replace("]", "").split("."):
        if token == "":
            raise SpecError(f"--set path {path!r} has an empty part")
        if token.startswith("-") and token[1:].isascii() and token[1:].isdigit():
            raise SpecError(f"--set path {path!r}: list indices count from 0 and cannot be negative. Received: {token}")
        parts.append(int(token) if token.isascii() and token.isdigit() else token)
    try:
        value = parse_json(text)
    except json.JSONDecodeError:
        value = text
    except SpecError as exc:
        raise SpecError(f"--set {path}: {exc}") from None
    check_json(value, tuple(parts))
    return parts, value


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply --set assignments to a parsed spec (a copy is returned)."""
    check_json(data)
    data = json.loads(json.dumps(data))
    for assignment in assignments:
        parts, value = parse_override(assignment)
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, parts[: depth + 1], assignment)
        last = parts[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise SpecError(f"--set {assignment}: {json_path(parts)} is not an existing list item")
            node[last] = value
        elif isinstance(node, dict):
            node[str(last)] = value
        else:
            raise SpecError(f"--set {assignment}: {json_path(parts[:-1])} is not an object")
    return data


def _child(node: Any, part: str | int, so_far: list[str | int], assignment: str) -> Any:
    if isinstance(node, list):
        if isinstance(part, int) and part < len(node):
            return node[part]
        raise SpecError(f"--set {assignment}: {json_path(so_far)} is not an existing list item")
    if isinstance(node, dict):
        return node.setdefault(str(part), {})
    raise SpecError(f"--set {assignment}: {json_path(so_far[:-1])} is not an object")


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a spec file as JSON; any failure is a one-line SpecError naming the file and position.

    The file must be a regular file of at most MAX_SPEC_BYTES (a FIFO or /dev/zero is refused
    without reading it); duplicate keys, nesting deeper than MAX_NESTING and non-finite numbers
    (NaN, Infinity, 1e999) are errors naming their JSON path.
    """
    data = read_regular(path, "spec file", SpecError, MAX_SPEC_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        parsed = parse_json(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    check_json(parsed)
    return parsed


class _RepeatedKeys(dict):
    """A JSON object that named some keys more than once (``repeated``); check_json reports it."""

    repeated: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    repeated = []
    for key, value in pairs:
        if key in result:
            repeated.append(key)
        result[key] = value
    if repeated:
        result = _RepeatedKeys(result)
        result.repeated = repeated
    return result


def parse_json(text: str) -> Any:
    """json.loads that remembers repeated keys and turns runaway nesting or huge numbers into SpecError."""
    try:
        return json.loads(text, object_pairs_hook=_object)
    except RecursionError:
        raise SpecError(f"JSON nested deeper than {MAX_NESTING} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise SpecError(f"malformed JSON: {exc}") from None


def check_json(data: Any, prefix: tuple[str | int, ...] = ()) -> None:
    """Structural limits on parsed JSON, every problem named by its JSON path (SpecError).

    Nesting at most MAX_NESTING, no repeated keys, every number finite, at most MAX_LAYERS layers.
    Iterative, so no input can exhaust the Python stack.
    """
    if not prefix and isinstance(data, dict) and isinstance(data.get("layers"), list) and len(data["layers"]) > MAX_LAYERS:
        raise SpecError([("layers", f"at most {MAX_LAYERS} layers are allowed. Received: {len(data['layers']):,} layers")])
    errors: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, prefix)]
    while stack and len(errors) < 10:
        node, loc = stack.pop()
        if len(loc) - len(prefix) > MAX_NESTING:
            raise SpecError([(json_path(loc), f"nested deeper than {MAX_NESTING} levels")])
        if isinstance(node, float) and not math.isfinite(node):
            errors.append((json_path(loc), f"input should be a finite number. Received: {json.dumps(node)}"))
        elif isinstance(node, dict):
            for key in getattr(node, "repeated", ()):
                errors.append((json_path(loc + (key,)), "the key appears more than once in the same object (only one value can count)"))
            stack.extend((v, loc + (str(k),)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, loc + (i,)) for i, v in reversed(list(enumerate(node))))
    if errors:
        raise SpecError(errors)
