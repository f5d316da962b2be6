"""Layer-type registry over the `cnnkit.layers` entry-point group.

Built-in and third-party layers are found the same way. Listing reads entry-point metadata only;
a layer's module is imported the first time a spec (or a caller) names its type. The entry-point
scan is cached only while no folder on sys.path has changed (installing or removing a distribution
changes its site-packages folder), so a plugin installed after import is seen.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points

from .errors import RegistryError
from .layers.base import Layer, LayerParams

GROUP = "cnnkit.layers"


@dataclass(frozen=True)
class LayerEntry:
    """One registered layer type, as its entry point declares it (nothing imported)."""

    type: str
    value: str  # "module:Class"
    dist: str  # distribution name that provides it, e.g. "cnnkit-extra"
    version: str

    @property
    def provider(self) -> str:
        return f"{self.dist} {self.version}"


_resolved: dict[LayerEntry, type[Layer]] = {}
_scanned: tuple[tuple, tuple[dict[str, LayerEntry], dict[str, list[LayerEntry]]]] | None = None


def _path_state() -> tuple:
    """sys.path with each folder's modification time: what the entry-point scan depends on."""
    state = []
    for folder in sys.path:
        try:
            state.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            state.append((folder, None))
    return tuple(state)


def _scan() -> tuple[dict[str, LayerEntry], dict[str, list[LayerEntry]]]:
    """All entry points of the group: unique ones by type, and types claimed by several distributions."""
    global _scanned
    state = _path_state()
    if _scanned is None or _scanned[0] != state:
        _scanned = (state, _scan_entry_points())
    return _scanned[1]


def _scan_entry_points() -> tuple[dict[str, LayerEntry], dict[str, list[LayerEntry]]]:
    claims: dict[str, dict[tuple[str, str], LayerEntry]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "unknown"
        entry = LayerEntry(ep.name, ep.value, dist, version)
        # The same distribution seen twice on sys.path (e.g. an editable install) is one claim.
        claims.setdefault(ep.name, {}).setdefault((dist.lower().replace("_", "-"), ep.value), entry)
    unique = {name: next(iter(c.values())) for name, c in claims.items() if len(c) == 1}
    # Sorted by distribution so messages do not depend on sys.path order.
    conflicts = {name: sorted(c.values(), key=lambda e: (e.dist.lower(), e.value)) for name, c in claims.items() if len(c) > 1}
    return unique, conflicts


def list_layers() -> list[LayerEntry]:
    """Every registered layer type (conflicting claims included), sorted by type; imports nothing."""
    unique, conflicts = _scan()
    entries = list(unique.values()) + [e for group in conflicts.values() for e in group]
    return sorted(entries, key=lambda e: (e.type, e.dist))


def find(layer_type: str) -> LayerEntry:
    """The entry point that provides ``layer_type``, without importing it."""
    unique, conflicts = _scan()
    if layer_type in conflicts:
        who = " and ".join(f"{e.provider} ({e.value})" for e in conflicts[layer_type])
        raise RegistryError(f"layer type {layer_type!r} is provided by more than one distribution: {who}; uninstall one of them")
    if layer_type not in unique:
        known = sorted(set(unique) | set(conflicts))
        close = difflib.get_close_matches(layer_type, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RegistryError(f"unknown layer type {layer_type!r}; {hint}known types: {', '.join(known)}")
    return unique[layer_type]


def load(layer_type: str) -> type[Layer]:
    """Import and return the class for ``layer_type``; checks that it honours the layer contract."""
    entry = find(layer_type)
    if entry in _resolved:
        return _resolved[entry]
    cls = load_entry(entry)
    _resolved[entry] = cls
    return cls


def load_entry(entry: LayerEntry) -> type[Layer]:
    """Import one entry point; any failure becomes a RegistryError naming it and its distribution."""
    where = f"entry point '{entry.type} = {entry.value}' from {entry.provider}"
    module_name, _, attr = entry.value.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except Exception as exc:  # a broken plugin must never take the others down
        raise RegistryError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Layer)):
        raise RegistryError(f"{where} does not name a subclass of cnnkit.layers.Layer. Received: {obj!r}")
    problem = contract_problem(obj)
    if problem:
        raise RegistryError(f"{where} breaks the layer contract: {problem}")
    return obj


def contract_problem(cls: type[Layer]) -> str | None:
    """What is wrong with a Layer subclass's static shape (Params, forward, non_trainable), or None.

    Only what can be seen without running the layer; ``cnnkit.testing.check_layer`` runs it.
    """
    name = cls.__name__
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, LayerParams)):
        return f"{name}.Params must subclass cnnkit.layers.LayerParams. Received: {params!r}"
    if params.model_config.get("extra") != "forbid":
        return f"{name}.Params must reject unknown fields (extra='forbid'). Received: extra={params.model_config.get('extra')!r}"
    if "type" in params.model_fields:
        return f"{name}.Params must not declare a field named 'type' (a spec uses it to name the layer type)"
    if cls.forward is Layer.forward:
        return f"{name} does not implement forward(weights, x, train)"
    fixed = getattr(cls, "non_trainable", ())
    if not (isinstance(fixed, tuple) and all(isinstance(n, str) for n in fixed)):
        return f"{name}.non_trainable must be a tuple of weight names. Received: {fixed!r}"
    if getattr(cls, "per_part_in_training", False) and fixed and "updates" not in inspect.signature(cls.forward).parameters:
        return f"{name} sets per_part_in_training and has non_trainable weights, so its forward must accept the keyword 'updates' (parts of a batch run at once and must not write shared weights)"
    return None


@dataclass(frozen=True)
class LayerStatus:
    """A registered layer type with its class, or the error that stops it from being used."""

    entry: LayerEntry
    cls: type[Layer] | None
    error: str | None


def load_all() -> list[LayerStatus]:
    """Try to load every registered layer type (for listings, the schema and conformance runs).

    Imports every plugin, unlike :func:`list_layers`; a broken or conflicting one becomes an error
    entry and never stops the others.
    """
    unique, conflicts = _scan()
    statuses = []
    for entry in list_layers():
        if entry.type in conflicts:
            try:
                find(entry.type)
            except RegistryError as exc:
                statuses.append(LayerStatus(entry, None, str(exc)))
            continue
        try:
            statuses.append(LayerStatus(entry, load(entry.type), None))
        except RegistryError as exc:
            statuses.append(LayerStatus(entry, None, str(exc)))
    return statuses

