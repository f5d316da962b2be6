"""Fuzzing `--set` and spec files: random JSON values at random paths give a valid spec or a SpecError.

Nothing else may come out (no RecursionError, ValueError, OverflowError, internal error), and the
message is always one line. A few hundred examples each, a few seconds in all.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.runtime import memory
from cnnkit.plugins import registry
from cnnkit.errors import SpecError
from cnnkit.spec import load_spec
from conftest import SEED_SPEC

SEED = json.loads(SEED_SPEC.read_text())


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


EXISTING = [p for p in _paths(SEED) if p]
# Keys that once broke the parser are kept as explicit examples ('¹' is a digit to str.isdigit).
KEYS = st.sampled_from(["type", "lr", "filters", "kernel_size", "units", "shape", "divide", "epochs", "x", "0", "-1", "", "a.b", "é", "¹", "0\n"]) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 2**31, 2**63, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(sorted(e.type for e in registry.list_layers()))  # so random layers of every installed type appear
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)
PATHS = st.tuples(st.sampled_from(EXISTING), st.lists(KEYS | st.integers(0, 12), max_size=2)).map(lambda t: t[0] + tuple(t[1]))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, derandomize=False)


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _only_spec_errors(path: Path, overrides: list[str]) -> None:
    try:
        spec = load_spec(path, overrides)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return
    memory.estimate(spec.layers)  # a valid spec can be summarised too


def _set_at(data, path, value):
    node = data
    for part in path[:-1]:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(node, dict):
            node = node.setdefault(str(part), {})
        else:
            return data
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    elif isinstance(node, dict):
        node[str(last)] = value
    return data


_FOLDER = Path(tempfile.mkdtemp(prefix="cnnkit-fuzz-"))
_SEED_FILE = _FOLDER / "seed.json"
_SEED_FILE.write_text(json.dumps(SEED))


@FUZZ
@given(PATHS, VALUES, st.booleans())
def test_set_gives_a_spec_or_a_spec_error(path, value, as_json):
    text = json.dumps(value) if as_json else str(value)  # json.dumps writes NaN / Infinity tokens
    _only_spec_errors(_SEED_FILE, [f"{_dotted(path)}={text}"])


@FUZZ
@given(st.lists(st.tuples(PATHS, VALUES), min_size=1, max_size=3))
def test_spec_files_give_a_spec_or_a_spec_error(edits):
    data = json.loads(json.dumps(SEED))
    for path, value in edits:
        data = _set_at(data, path, value)
    target = _FOLDER / "fuzzed.json"
    target.write_text(json.dumps(data))
    _only_spec_errors(target, [])


@FUZZ
@given(st.text(alphabet='{}[]":,0123456789.eE-+ truefalsnNaIiy\\', max_size=200))
def test_malformed_spec_text_gives_a_spec_error(text):
    target = _FOLDER / "text.json"
    target.write_text(text)
    _only_spec_errors(target, [])
