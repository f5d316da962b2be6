"""cnnkit.runtime.allocator: glibc's malloc keeps freed memory for reuse once a model runs; CNNKIT_MALLOC_TUNING=0 opts out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
import numpy as np
import cnnkit
from cnnkit.runtime import allocator
calls = []
real = ctypes.CDLL
class Recording:  # records mallopt calls made through a fresh CDLL handle
    def __init__(self, *a, **k):
        self._lib = real(*a, **k)
    def __getattr__(self, name):
        attr = getattr(self._lib, name)
        if name != "mallopt":
            return attr
        def mallopt(option, value):
            calls.append((option, value))
            return attr(option, value)
        mallopt.argtypes = None
        return mallopt
ctypes.CDLL = Recording
model = cnnkit.build({"name": "m", "input": {"shape": [1, 4, 4]}, "layers": [{"type": "flatten"}, {"type": "dense", "units": 2}]})
model.forward(np.zeros((2, 1, 4, 4), np.float32))
model.forward(np.zeros((2, 1, 4, 4), np.float32))
other = cnnkit.build({"name": "o", "input": {"shape": [1, 4, 4]}, "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]})
other.forward(np.zeros((2, 1, 4, 4), np.float32))  # a second model: its first pass tunes nothing again
print(calls)
"""


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CNNKIT_MALLOC_TUNING"}
    if env_value is not None:
        env["CNNKIT_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # a C library that does not know the name
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_the_first_forward_pass_tunes_malloc_once_per_process():
    from cnnkit.runtime import allocator

    assert _run(None) == repr([(allocator.M_MMAP_THRESHOLD, 32 << 20), (allocator.M_TRIM_THRESHOLD, 1 << 30)])


@pytest.mark.skipif(not _glibc(), reason="glibc only: elsewhere nothing tunes malloc, so opting out has nothing to show")
def test_cnnkit_malloc_tuning_0_leaves_malloc_alone():
    assert _run("0") == "[]"


@pytest.mark.parametrize("name, value", [("CNNKIT_MALLOC_TUNING", "banana"), ("CNNKIT_MALLOC_TUNING", "off"), ("CNNKIT_NUM_THREADS", "banana"), ("CNNKIT_BLOCK_BYTES", "-5"), ("CNNKIT_FUSE", "yes")])
def test_bad_settings_fail_in_one_line_before_data_or_run_folder(tmp_path, monkeypatch, name, value):
    """Checked when the session starts: no data is read (the data folder does not exist) and no run
    folder is created; before, both were checked only at the first forward pass."""
    from typer.testing import CliRunner

    from cnnkit.cli import app
    from conftest import TINY_SPEC

    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(tmp_path / "no-data-here")})
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "t.cnnkit"), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [f"error: {name} must be " + result.stderr.split(" must be ", 1)[1].strip()]
    assert repr(value) in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t.cnnkit").exists()
