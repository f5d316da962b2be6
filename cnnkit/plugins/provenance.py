"""Which installed layer serves each layer type a bundle recorded, and whether it is the recorded one.

A bundle records, per layer type, the distribution and version that provided it. On load:

- the same distribution and version (or a built-in: the format defines those) is used silently;
- the same distribution at another version is used, with a ProviderMismatchWarning (one line);
- a different distribution providing the same type name is an error naming both and how to get the
  recorded one, unless the caller allows the mismatch (then a warning);
- no provider at all is an error naming the distribution to install.

Bundles written before qualified types (format 1.0) record plain plugin types; their provider
entry names the distribution, so they resolve exactly like the qualified types newer bundles hold.
Nothing here imports layer code: it reads entry-point metadata only.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import registry
from ..errors import RegistryError
from .registry import LayerEntry

ALLOW_HINT = "--allow-provider-mismatch (cnnkit.load(..., allow_provider_mismatch=True))"

# Layer types that moved from a plugin into cnnkit itself, with the same name, weights and math: a
# bundle recording the plugin's type loads with the built-in when the plugin no longer provides it.
MOVED_TO_CORE: frozenset[tuple[str, str]] = frozenset({("cnnkit-extra", "batchnorm2d")})  # cnnkit-extra 0.2.0


@dataclass(frozen=True)
class Match:
    """One recorded layer type and the installed entry that would serve it."""

    recorded_type: str  # as the bundle writes it: plain (built-in or format 1.0) or 'dist:type'
    dist: str
    version: str
    installed: LayerEntry | None  # None: nothing (unambiguous) provides the type
    problem: str | None = None  # the recorded distribution does not provide it: an error unless allowed
    note: str | None = None  # same distribution, other version: a warning

    @property
    def status(self) -> str:
        if self.installed is None:
            return "missing"
        if self.problem:
            return "other distribution"
        return "other version" if self.note else "same"


def recorded_name(layer_type: str, dist: str) -> str:
    """The qualified name of what was recorded: a plain plugin type from a 1.0 bundle gets its dist."""
    if ":" in layer_type or registry.normalize_dist(dist) == registry.BUILTIN_DIST:
        return layer_type
    return f"{dist}:{layer_type}"


def match(layer_type: str, info: dict[str, str]) -> Match:
    """The installed provider for ``layer_type`` as recorded with ``info`` ({"dist", "version"})."""
    dist, version = info["dist"], info["version"]
    plain = layer_type.rpartition(":")[2]
    try:
        entry = registry.find(recorded_name(layer_type, dist))
    except RegistryError:
        entry = None
    if entry is not None:
        if entry.version != version and not entry.builtin:
            note = f"layer type {plain!r} was recorded from {dist} {version}; the installed {entry.provider} is used (results may differ)"
            return Match(layer_type, dist, version, entry, note=note)
        return Match(layer_type, dist, version, entry)
    if (registry.normalize_dist(dist), plain) in MOVED_TO_CORE:
        return Match(layer_type, dist, version, registry.find(plain))
    # A built-in never stands in for a plugin's type: the plugin chose that name for other math, and
    # cnnkit's own layer would only fail on the plugin's params (or, worse, accept them).
    others = [e for e in registry.providers_of(plain) if not e.builtin]
    if not others:
        problem = f"layer type {plain!r} comes from {dist} {version}, which is not installed: pip install {dist}"
        return Match(layer_type, dist, version, None, problem)
    substitute: LayerEntry | None = others[0] if len(others) == 1 else None  # several: the caller cannot be given one
    who = " and ".join(e.provider for e in others)
    problem = (
        f"layer type {plain!r} was recorded from {dist} {version}, which is not installed, and {who} provides {plain!r} instead: "
        f"pip install '{dist}=={version}' to get the recorded one, or pass {ALLOW_HINT} to use {'it' if substitute else 'another'}"
    )
    return Match(layer_type, dist, version, substitute, problem)


def resolve(layers: list[dict], providers: dict[str, dict[str, str]]) -> dict[str, Match]:
    """One Match per distinct recorded layer type, in first-use order."""
    matches: dict[str, Match] = {}
    for layer in layers:
        if layer["type"] not in matches:
            matches[layer["type"]] = match(layer["type"], providers[layer["type"]])
    return matches
