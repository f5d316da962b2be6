"""Spec errors as users read them: one (JSON path, message) per problem, with what was received and,
for an unknown key, the closest known one ("did you mean 'warmup_steps'?")."""

from __future__ import annotations

import difflib
import json
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from .files import json_path

Problems = list[tuple[str, str]]  # (JSON path, message): what SpecError carries


def received(value: Any) -> str:
    """``value`` as JSON, cut to 60 characters: the "Received: ..." of a message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside Optional[...], a union, list[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) pydantic model found at ``loc`` below ``model``, for did-you-mean."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def pydantic_problems(exc: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...], also_allowed: list[str] = ()) -> Problems:
    """One (json_path, message) per error of ``model``'s validation, below ``prefix``; ``also_allowed``
    are keys valid beside the model's own (for did-you-mean)."""
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = json_path(prefix + loc)
        kind = err["type"]
        if kind == "missing":
            msg = "required field is missing"
        elif kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1]) + (list(also_allowed) if len(loc) == 1 else [])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "; this takes no fields")
            msg = f"unknown field{hint}"
        else:
            text = err["msg"]
            if text.startswith("Value error, "):
                text = text[len("Value error, ") :]
            if kind == "model_type":  # pydantic names the class ("instance of EmaSpec"): a spec writer sees an object
                text = "input should be an object ({...})"
            text = text.replace(" after validation", "")  # "at most 2 items after validation, not 3"
            msg = f"{text[0].lower()}{text[1:]}"
            if "received" not in text.lower():  # a layer's own validator may already say what it got
                msg += f". Received: {received(err['input'])}"
        errors.append((path, msg))
    return errors
