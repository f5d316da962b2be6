"""`cnnkit new-layer`: the generated package is refused over an existing folder, and, for real, installs
from a wheel of cnnkit (templates as package data) into a fresh venv, passes its own tests, and trains
on a real Fashion-MNIST subset (issue 11's "must show")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from conftest import REAL_DATA

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_new_layer_writes_the_package_and_never_overwrites(tmp_path):
    result = runner.invoke(app, ["new-layer", "soft_gate", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "cnnkit-soft-gate"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "cnnkit_soft_gate/__init__.py", "cnnkit_soft_gate/soft_gate.py", "pyproject.toml", "tests/test_soft_gate.py"]
    assert 'soft_gate = "cnnkit_soft_gate.soft_gate:SoftGate"' in (root / "pyproject.toml").read_text()
    marker = root / "README.md"
    marker.write_text("mine")
    again = runner.invoke(app, ["new-layer", "soft_gate", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "already exists; refusing to overwrite it" in again.output
    assert marker.read_text() == "mine"
    bad = runner.invoke(app, ["new-layer", "Soft-Gate", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "Received: 'Soft-Gate'" in bad.output
    custom = runner.invoke(app, ["new-layer", "gate", "--dist", "acme-gates", "--out", str(tmp_path)])
    assert custom.exit_code == 0 and (tmp_path / "acme-gates" / "acme_gates" / "gate.py").is_file()


def test_new_layer_says_what_is_wrong_with_out_and_warns_about_a_builtin_name(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    onto_file = runner.invoke(app, ["new-layer", "gain", "--out", str(tmp_path / "notes.txt")])
    assert onto_file.exit_code == 1 and "notes.txt is not a folder" in onto_file.output  # it was "does not exist"
    missing = runner.invoke(app, ["new-layer", "gain", "--out", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "nowhere does not exist" in missing.output
    plain = runner.invoke(app, ["new-layer", "gain", "--out", str(tmp_path)])
    assert plain.exit_code == 0 and "warning" not in plain.output
    builtin = runner.invoke(app, ["new-layer", "relu", "--out", str(tmp_path)])
    assert builtin.exit_code == 0, builtin.output
    assert "warning: 'relu' is a built-in cnnkit layer type" in builtin.output and '"cnnkit-relu:relu"' in builtin.output


def _run(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
@pytest.mark.realdata
def test_generated_plugin_installs_in_a_fresh_venv_passes_its_tests_and_trains(tmp_path):
    if not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the real Fashion-MNIST files are not installed")
    wheels = tmp_path / "wheels"
    # cnnkit as pip installs it (a wheel: no git checkout behind it), built without network access.
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT)
    venv = tmp_path / "venv"
    # The base interpreter's numpy, pydantic and pytest serve the venv; pip adds the rest.
    _run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--system-site-packages", venv)
    py = venv / "bin" / "python"
    _run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wheels.glob("cnnkit-*.whl"))
    _run(venv / "bin" / "cnnkit", "new-layer", "my_gain", "--out", tmp_path)
    plugin = tmp_path / "cnnkit-my-gain"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, plugin)
    _run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wheels.glob("cnnkit_my_gain-*.whl"))

    rows = {r["qualified"]: r for r in json.loads(_run(venv / "bin" / "cnnkit", "layers", "--json").stdout)}
    assert rows["cnnkit-my-gain:my_gain"]["version"] == "0.1.0" and "error" not in rows["cnnkit-my-gain:my_gain"]
    tests = _run(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", plugin / "tests", cwd=tmp_path)
    assert " passed" in tests.stdout and "failed" not in tests.stdout and "error" not in tests.stdout

    spec = {
        "name": "gain",
        "input": {"shape": [1, 28, 28]},
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same"},
            {"type": "my_gain", "init": 1.0},
            {"type": "relu"},
            {"type": "maxpool2d"},
            {"type": "flatten"},
            {"type": "dense", "units": 10},
            {"type": "softmax"},
        ],
        "data": {"dir": str(REAL_DATA), "train_limit": 3000, "test_limit": 1000},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": {"type": "adam", "lr": 0.002}},
    }
    (tmp_path / "gain.json").write_text(json.dumps(spec))
    trained = _run(venv / "bin" / "cnnkit", "run", tmp_path / "gain.json", "--quiet", "--out", tmp_path / "gain.cnnkit")
    assert trained.stdout == ""
    scores = json.loads(_run(venv / "bin" / "cnnkit", "evaluate", tmp_path / "gain.cnnkit", "--limit", "1000", "--json").stdout)
    assert scores["examples"] == 1000 and scores["accuracy"] > 0.6  # 10 classes: chance is 0.1
    info = json.loads(_run(venv / "bin" / "cnnkit", "inspect", tmp_path / "gain.cnnkit", "--json").stdout)
    assert info["layers"][1]["type"] == "cnnkit-my-gain:my_gain"
    assert info["layers"][1]["provider"] == info["layers"][1]["installed"] == "cnnkit-my-gain 0.1.0"
