"""`cnnkit new-layer`: the generated package is refused over an existing folder or a name that would break
or shadow a package, and, for real, installs from a wheel of cnnkit (templates as package data) into a
fresh venv, passes its own tests, and trains on a real Fashion-MNIST subset (issue 11's "must show").
The generated layer and dataset-source packages pass their own tests (issue 24)."""

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


# --------------------------------------------------------------------------------------------------
# Issue 24, findings 6 and 9: names that made broken or dangerous packages; what the scaffold shows.


def test_a_keyword_name_makes_an_importable_package(tmp_path):
    result = runner.invoke(app, ["new-layer", "class", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "cnnkit-class"
    assert 'class = "cnnkit_class.class_:Class"' in (root / "pyproject.toml").read_text()
    for path in root.rglob("*.py"):  # the generated test imported `cnnkit_class.class`: a SyntaxError
        compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("dist, problem", [
    ("cnnkit", "a distribution of that name is already installed (cnnkit "),
    ("numpy", "a distribution of that name is already installed (numpy "),
    ("json", "would make the package 'json', but a module of that name is already importable"),
    ("3d-layers", "would make the package name '3d_layers', which Python cannot import"),
])
def test_a_dist_that_would_shadow_or_break_a_package_is_refused(tmp_path, dist, problem):
    result = runner.invoke(app, ["new-layer", "foo", "--dist", dist, "--out", str(tmp_path)])
    assert result.exit_code == 1 and problem in result.output and len(result.output.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_scaffold_pins_cnnkit_like_the_example_plugin_and_shows_the_whole_contract(tmp_path):
    import re

    import cnnkit

    assert runner.invoke(app, ["new-layer", "gain", "--out", str(tmp_path)]).exit_code == 0
    root = tmp_path / "cnnkit-gain"
    requirement = re.search(r'"(cnnkit[>=<][^"]*)"', (root / "pyproject.toml").read_text()).group(1)
    example = re.search(r'"(cnnkit[>=<][^"]*)"', (ROOT / "plugins" / "cnnkit-extra" / "pyproject.toml").read_text()).group(1)
    assert requirement == f"cnnkit>={cnnkit.__version__},<0.2" and example.endswith(",<0.2")  # both stop before the next minor
    layer = (root / "cnnkit_gain" / "gain.py").read_text()
    for shown in ("ctx.rng.random(", "ctx.update(\"running_mean\"", "trainable=False", "ctx.input_grad", "def to_onnx(", "def to_torch(", "def from_torch(", "never on self"):
        assert shown in layer, shown
    assert "Keep the input's dtype: x is float32 in a model and float64 in\nthe kit's gradient checks" in layer


@pytest.mark.slow
def test_generated_layer_and_source_pass_their_own_tests(tmp_path):
    from fakeplugins import subprocess_env, write_dist

    assert runner.invoke(app, ["new-layer", "class", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["new-source", "csv-pixels", "--out", str(tmp_path)]).exit_code == 0
    layer, source = tmp_path / "cnnkit-class", tmp_path / "cnnkit-csv-pixels"
    # Installed as pip would register them: a dist-info beside each package.
    write_dist(layer, "cnnkit-class", "0.1.0", {"class": "cnnkit_class.class_:Class"})
    write_dist(source, "cnnkit-csv-pixels", "0.1.0", {}, datasets={"csv-pixels": "cnnkit_csv_pixels.csv_pixels:CsvPixels"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(layer / "tests"), str(source / "tests")],
                            cwd=tmp_path, env=subprocess_env(layer, source), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]
