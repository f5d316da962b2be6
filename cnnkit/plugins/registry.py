"""Entry-point registries: layer types (`cnnkit.layers`) and dataset sources (`cnnkit.datasets`).

Built-in and third-party plugins are found the same way. Listing reads entry-point metadata only;
a plugin's module is imported the first time a spec (or a caller) names it. The entry-point scan is
cached only while no folder on sys.path has changed (installing or removing a distribution changes
its site-packages folder), so a plugin installed after import is seen.

Names: a spec may write a name plain (``"tanh"``) or qualified by its distribution
(``"cnnkit-hidden-layers:tanh"``). A plain name means the built-in of that name if cnnkit has one
(built-ins are never shadowed: a plugin claiming ``relu`` is usable only qualified), else the one
distribution that provides it; several providers make a plain name an error listing the choices.

One :class:`Registry` per entry-point group; the module-level functions (``find``, ``load``,
``load_all``, ...) are those of :data:`LAYERS`, the layer registry.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from ..errors import RegistryError
from ..layers.base import Layer, LayerParams
from .isolation import plugin_import

GROUP = "cnnkit.layers"
BUILTIN_DIST = "cnnkit"  # the distribution whose names no plugin can take over


def normalize_dist(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): 'CNNKit_Extra' -> 'cnnkit-extra'."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Entry:
    """One registered name (a layer type, a dataset), as its entry point declares it (nothing imported)."""

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
        """The name a validated spec (and so a bundle) records: plain for built-ins, else qualified."""
        return self.type if self.builtin else self.qualified


@dataclass(frozen=True)
class Status:
    """A registered entry with its class, or the error that stops it from being used.

    ``conflict`` says why the entry is usable only by its qualified name (another provider of the
    same plain name), or is None.
    """

    entry: Entry
    cls: type | None
    error: str | None
    conflict: str | None = None
    noun: str = "layer type"  # what the entry is, for messages: "layer type", "dataset"


LayerEntry = Entry  # the names layer code has always used
LayerStatus = Status


def _path_state() -> tuple:
    """sys.path with each folder's modification time: what the entry-point scan depends on."""
    state = []
    for folder in sys.path:
        try:
            state.append((folder, os.stat(folder or ".").st_mtime_ns))
        except OSError:
            state.append((folder, None))
    return tuple(state)


class Registry:
    """The plugins of one entry-point group, each a subclass of ``base`` passing ``contract_problem``.

    ``noun`` names an entry in messages ("layer type", "dataset"), ``base_name`` the base class as
    users import it, ``contract`` the contract a class can break ("layer", "dataset source").
    """

    def __init__(self, group: str, noun: str, base: type, base_name: str, contract: str, contract_problem: Callable[[type], str | None]):
        self.group, self.noun, self.base, self.base_name, self.contract = group, noun, base, base_name, contract
        self.contract_problem = contract_problem
        self._resolved: dict[Entry, type] = {}
        self._scanned: tuple[tuple, dict[str, list[Entry]]] | None = None

    def _scan(self) -> dict[str, list[Entry]]:
        """Every entry point of the group, by name: built-in first, then by distribution."""
        state = _path_state()
        if self._scanned is None or self._scanned[0] != state:
            self._scanned = (state, self._scan_entry_points())
        return self._scanned[1]

    def _scan_entry_points(self) -> dict[str, list[Entry]]:
        claims: dict[str, dict[tuple[str, str], Entry]] = {}
        for ep in entry_points(group=self.group):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "unknown"
            entry = Entry(ep.name, ep.value, dist, version)
            # The same distribution seen twice on sys.path (e.g. an editable install) is one claim.
            claims.setdefault(ep.name, {}).setdefault((normalize_dist(dist), ep.value), entry)
        # Sorted so messages do not depend on sys.path order.
        return {name: sorted(c.values(), key=lambda e: (not e.builtin, e.dist.lower(), e.value)) for name, c in claims.items()}

    def entries(self) -> list[Entry]:
        """Every registered entry (conflicting claims included), sorted by name; imports nothing."""
        entries = [e for group in self._scan().values() for e in group]
        return sorted(entries, key=lambda e: (e.type, not e.builtin, e.dist.lower()))

    def providers_of(self, name: str) -> list[Entry]:
        """Every installed entry registering the plain name ``name`` (built-in first)."""
        return list(self._scan().get(name, []))

    def conflict(self, entry: Entry) -> str | None:
        """Why ``entry`` cannot be named by its plain name (only qualified), or None if it can."""
        claims = self.providers_of(entry.type)
        if len(claims) < 2:
            return None
        if claims[0].builtin:
            if entry.builtin:
                return None
            return f"shadows the built-in {entry.type!r}, which the plain name keeps meaning; usable only as {entry.qualified!r}"
        others = ", ".join(e.provider for e in claims if e != entry)
        return f"{entry.type!r} is also provided by {others}; usable only as {entry.qualified!r}"

    def find(self, name: str) -> Entry:
        """The entry point that provides ``name`` (plain or 'dist:name'), without importing it."""
        claims, noun = self._scan(), self.noun
        dist, sep, plain = name.rpartition(":")
        if sep:
            found = [e for e in claims.get(plain, []) if normalize_dist(e.dist) == normalize_dist(dist)]
            if found:
                return found[0]
            others = claims.get(plain, [])
            if others:
                raise RegistryError(f"{noun} {plain!r} from distribution {dist!r} is not installed; installed providers of {plain!r}: {', '.join(repr(e.spec_type) for e in others)}")
            raise RegistryError(f"unknown {noun} {name!r}: no installed distribution {dist!r} provides {plain!r}")
        group = claims.get(name)
        if not group:
            close = difflib.get_close_matches(name, sorted(claims), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            plural = "known types" if noun == "layer type" else f"known {noun}s"
            raise RegistryError(f"unknown {noun} {name!r}; {hint}{plural}: {', '.join(sorted(claims))}")
        if len(group) > 1 and not group[0].builtin:
            who = ", ".join(f"{e.provider} ({e.value})" for e in group)
            choices = " or ".join(repr(e.qualified) for e in group)
            raise RegistryError(f"{noun} {name!r} is provided by more than one distribution: {who}; write the qualified {noun.split()[-1]}: {choices}")
        return group[0]

    def load(self, name: str) -> type:
        """Import and return the class for ``name`` (plain or qualified); checks its contract."""
        entry = self.find(name)
        if entry in self._resolved:
            return self._resolved[entry]
        cls = self.load_entry(entry)
        self._resolved[entry] = cls
        return cls

    def load_entry(self, entry: Entry) -> type:
        """Import one entry point; any failure becomes a RegistryError naming it and its distribution."""
        where = f"entry point '{entry.type} = {entry.value}' from {entry.provider}"
        module_name, _, attr = entry.value.partition(":")
        try:
            # Whatever a plugin writes while importing goes to stderr, so `--json` output stays valid,
            # and its os._exit is stopped (cnnkit.plugins.isolation).
            with plugin_import():
                obj = importlib.import_module(module_name)
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin (even one calling sys.exit) must never take the others down
            raise RegistryError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise RegistryError(f"{where} does not name a subclass of {self.base_name}. Received: {obj!r}")
        problem = self.contract_problem(obj)
        if problem:
            raise RegistryError(f"{where} breaks the {self.contract} contract: {problem}")
        return obj

    def load_all(self) -> list[Status]:
        """Try to load every registered entry (for listings, the schema and conformance runs).

        Imports every plugin, unlike :meth:`entries`; a broken one becomes an error entry and never
        stops the others. Conflicting claims are loaded too (they are usable qualified) and say so.
        """
        statuses = []
        for entry in self.entries():
            try:
                if ":" in entry.type:  # no spec could name it: "a:b" means entry b of distribution a
                    raise RegistryError(f"entry point '{entry.type} = {entry.value}' from {entry.provider}: a {self.noun} name cannot contain ':' (it separates a distribution from a name)")
                cls, error = self.load(entry.qualified), None
            except RegistryError as exc:
                cls, error = None, str(exc)
            statuses.append(Status(entry, cls, error, self.conflict(entry), self.noun))
        return statuses


def params_problem(cls: type, base: type, base_name: str, key: str, key_names: str) -> str | None:
    """What is wrong with a plugin class's ``Params`` (subclass ``base``, extra='forbid', no field
    ``key``: a spec uses it to name ``key_names``), or None. Shared by every plugin group."""
    name = cls.__name__
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, base)):
        return f"{name}.Params must subclass {base_name}. Received: {params!r}"
    if params.model_config.get("extra") != "forbid":
        return f"{name}.Params must reject unknown fields (extra='forbid'). Received: extra={params.model_config.get('extra')!r}"
    if key in params.model_fields:
        return f"{name}.Params must not declare a field named {key!r} (a spec uses it to name {key_names})"
    return None


def contract_problem(cls: type[Layer]) -> str | None:
    """What is wrong with a Layer subclass's static shape (Params, forward, batch_coupling), or None.

    Only what can be seen without running the layer; ``cnnkit.testing.check_layer`` runs it.
    """
    name = cls.__name__
    problem = params_problem(cls, LayerParams, "cnnkit.layers.LayerParams", "type", "the layer type")
    if problem:
        return problem
    if cls.forward is Layer.forward:
        return f"{name} does not implement forward(weights, x, ctx)"
    from ..layers.base import BATCH_COUPLINGS
    from ..layers.legacy import is_legacy

    if not is_legacy(cls):
        if cls.batch_coupling not in BATCH_COUPLINGS:
            return f"{name}.batch_coupling must be one of {', '.join(map(repr, BATCH_COUPLINGS))}. Received: {cls.batch_coupling!r}"
        return None
    fixed = getattr(cls, "non_trainable", ())  # the older contract (cnnkit.layers.legacy)
    if not (isinstance(fixed, tuple) and all(isinstance(n, str) for n in fixed)):
        return f"{name}.non_trainable must be a tuple of weight names. Received: {fixed!r}"
    if getattr(cls, "per_part_in_training", False) and fixed and "updates" not in inspect.signature(cls.forward).parameters:
        return f"{name} sets per_part_in_training and has non_trainable weights, so its forward must accept the keyword 'updates' (parts of a batch run at once and must not write shared weights)"
    return None


LAYERS = Registry(GROUP, "layer type", Layer, "cnnkit.layers.Layer", "layer", contract_problem)

list_layers = LAYERS.entries
providers_of = LAYERS.providers_of
conflict = LAYERS.conflict
find = LAYERS.find
load = LAYERS.load
load_entry = LAYERS.load_entry
load_all = LAYERS.load_all
