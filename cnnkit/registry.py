"""Layer-type registry over the `cnnkit.layers` entry-point group.

Built-in and third-party layers are found the same way. Listing reads entry-point metadata only;
a layer's module is imported the first time a spec (or a caller) names its type. The entry-point
scan is cached only while no folder on sys.path has changed (installing or removing a distribution
changes its site-packages folder), so a plugin installed after import is seen.

Names: a spec may write a type plain (``"tanh"``) or qualified by its distribution
(``"cnnkit-hidden-layers:tanh"``). A plain name means the built-in of that name if cnnkit has one
(built-ins are never shadowed: a plugin claiming ``relu`` is usable only qualified), else the one
distribution that provides it; several providers make a plain name an error listing the choices.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points

from .errors import RegistryError
from .layers.base import Layer, LayerParams

GROUP = "cnnkit.layers"
BUILTIN_DIST = "cnnkit"  # the distribution whose layer names no plugin can take over


def normalize_dist(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): 'CNNKit_Extra' -> 'cnnkit-extra'."""
    return re.sub(r"[-_.]+", "-", name).lower()


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

    @property
    def builtin(self) -> bool:
        return normalize_dist(self.dist) == BUILTIN_DIST

    @property
    def qualified(self) -> str:
        """'dist:type', the name that always means this entry."""
        return f"{self.dist}:{self.type}"

    @property
    def spec_type(self) -> str:
        """The type a validated spec (and so a bundle) records: plain for built-ins, else qualified."""
        return self.type if self.builtin else self.qualified


_resolved: dict[LayerEntry, type[Layer]] = {}
_scanned: tuple[tuple, dict[str, list[LayerEntry]]] | None = None


def _path_state() -> tuple:
    """sys.path with each folder's modification time: what the entry-point scan depends on."""
    state = []
    for folder in sys.path:
        try:
            state.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            state.append((folder, None))
    return tuple(state)


def _scan() -> dict[str, list[LayerEntry]]:
    """Every entry point of the group, by type name: built-in first, then by distribution."""
    global _scanned
    state = _path_state()
    if _scanned is None or _scanned[0] != state:
        _scanned = (state, _scan_entry_points())
    return _scanned[1]


def _scan_entry_points() -> dict[str, list[LayerEntry]]:
    claims: dict[str, dict[tuple[str, str], LayerEntry]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "unknown"
        entry = LayerEntry(ep.name, ep.value, dist, version)
        # The same distribution seen twice on sys.path (e.g. an editable install) is one claim.
        claims.setdefault(ep.name, {}).setdefault((normalize_dist(dist), ep.value), entry)
    # Sorted so messages do not depend on sys.path order.
    return {name: sorted(c.values(), key=lambda e: (not e.builtin, e.dist.lower(), e.value)) for name, c in claims.items()}


def list_layers() -> list[LayerEntry]:
    """Every registered layer type (conflicting claims included), sorted by type; imports nothing."""
    entries = [e for group in _scan().values() for e in group]
    return sorted(entries, key=lambda e: (e.type, not e.builtin, e.dist.lower()))


def providers_of(layer_type: str) -> list[LayerEntry]:
    """Every installed entry registering the plain name ``layer_type`` (built-in first)."""
    return list(_scan().get(layer_type, []))


def conflict(entry: LayerEntry) -> str | None:
    """Why ``entry`` cannot be named by its plain type (only qualified), or None if it can."""
    claims = providers_of(entry.type)
    if len(claims) < 2:
        return None
    if claims[0].builtin:
        if entry.builtin:
            return None
        return f"shadows the built-in {entry.type!r}, which the plain name keeps meaning; usable only as {entry.qualified!r}"
    others = ", ".join(e.provider for e in claims if e != entry)
    return f"{entry.type!r} is also provided by {others}; usable only as {entry.qualified!r}"


def find(layer_type: str) -> LayerEntry:
    """The entry point that provides ``layer_type`` (plain or 'dist:type'), without importing it."""
    claims = _scan()
    dist, sep, name = layer_type.rpartition(":")
    if sep:
        found = [e for e in claims.get(name, []) if normalize_dist(e.dist) == normalize_dist(dist)]
        if found:
            return found[0]
        others = claims.get(name, [])
        if others:
            raise RegistryError(f"layer type {name!r} from distribution {dist!r} is not installed; installed providers of {name!r}: {', '.join(repr(e.spec_type) for e in others)}")
        raise RegistryError(f"unknown layer type {layer_type!r}: no installed distribution {dist!r} provides {name!r}")
    group = claims.get(layer_type)
    if not group:
        raise RegistryError(f"unknown layer type {layer_type!r}; {_hint(layer_type, claims)}known types: {', '.join(sorted(claims))}")
    if len(group) > 1 and not group[0].builtin:
        who = ", ".join(f"{e.provider} ({e.value})" for e in group)
        choices = " or ".join(repr(e.qualified) for e in group)
        raise RegistryError(f"layer type {layer_type!r} is provided by more than one distribution: {who}; write the qualified type: {choices}")
    return group[0]


def _hint(name: str, claims: dict) -> str:
    close = difflib.get_close_matches(name, sorted(claims), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def load(layer_type: str) -> type[Layer]:
    """Import and return the class for ``layer_type`` (plain or qualified); checks the layer contract."""
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
        # Whatever a plugin prints while importing goes to stderr, so `--json` output stays valid.
        with contextlib.redirect_stdout(sys.stderr):
            obj = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a broken plugin (even one calling sys.exit) must never take the others down
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
    """A registered layer type with its class, or the error that stops it from being used.

    ``conflict`` says why the entry is usable only by its qualified name (another provider of the
    same plain name), or is None.
    """

    entry: LayerEntry
    cls: type[Layer] | None
    error: str | None
    conflict: str | None = None


def load_all() -> list[LayerStatus]:
    """Try to load every registered layer type (for listings, the schema and conformance runs).

    Imports every plugin, unlike :func:`list_layers`; a broken one becomes an error entry and never
    stops the others. Conflicting claims are loaded too (they are usable qualified) and say so.
    """
    statuses = []
    for entry in list_layers():
        try:
            if ":" in entry.type:  # no spec could name it: "a:b" means type b of distribution a
                raise RegistryError(f"entry point '{entry.type} = {entry.value}' from {entry.provider}: a layer type name cannot contain ':' (it separates a distribution from a type)")
            cls, error = load(entry.qualified), None
        except RegistryError as exc:
            cls, error = None, str(exc)
        statuses.append(LayerStatus(entry, cls, error, conflict(entry)))
    return statuses
