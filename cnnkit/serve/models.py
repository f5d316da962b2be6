"""The models a server holds: bundles loaded under their names, warmed up, checked for clashes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CnnkitError
from ..spec.models import NAME_PATTERN
from .protocol import Signature


@dataclass(frozen=True)
class ServedModel:
    """A loaded bundle, the file it came from, and the name and signature it is served under."""

    model: object  # cnnkit.Model
    path: str
    signature: Signature

    @property
    def name(self) -> str:
        return self.signature.name


NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def parse_target(target: str) -> tuple[str | None, str]:
    """``NAME=PATH`` or ``PATH`` (an existing file whose name holds '=' is a path); a CnnkitError
    when the text before the first '=' cannot be a model name and no such file exists."""
    name, sep, path = target.partition("=")
    if not sep or os.path.exists(target):
        return None, target
    if not NAME_PATTERN.fullmatch(name):
        raise CnnkitError(f"{target!r} is no file, and {name!r} cannot be a model name for NAME=PATH ({NAME_RULE})")
    return name, path


def load_models(targets: list[str], *, allow_provider_mismatch: bool = False) -> dict[str, ServedModel]:
    """Load each bundle (``PATH`` or ``NAME=PATH``) and run it once on a blank batch.

    A model is served under the name given, else its spec's ``name``. Two models under one name, or a
    name that cannot be a URL path segment, are a CnnkitError naming both files.
    """
    from .. import load

    if not targets:
        raise CnnkitError("serve needs at least one bundle")
    models: dict[str, ServedModel] = {}
    for target in targets:
        name, path = parse_target(target)
        model = load(Path(path), allow_provider_mismatch=allow_provider_mismatch)
        name = name or model.spec.name
        if not NAME_PATTERN.fullmatch(name):
            raise CnnkitError(f"{path}: model name {name!r} cannot be served ({NAME_RULE}); give one as NAME={path}")
        if name in models:
            raise CnnkitError(f"two bundles are named {name!r}: {models[name].path} and {path}; name one as OTHER={path}")
        model.predict_proba(np.zeros((1, *model.input_shape), np.uint8))  # the first pass checks the layers: not in a request
        models[name] = ServedModel(model, path, Signature.of(name, model))
    return models
