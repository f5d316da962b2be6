"""`cnnkit inspect`: everything in a bundle, shown without importing any layer code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cnnkit import bundle
from cnnkit.cli import app
from test_bundle import payload_of, repack, tiny_model

runner = CliRunner()


def test_inspect_shows_every_part_of_a_bundle(tmp_path):
    path = tiny_model().save(tmp_path / "small.cnnkit")
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    for expected in ("format 1.1", "'small'", "cat, dog, owl", "x / 255.0 - 0.5", "conv2d", "cnnkit 0.1.0", "0.kernel", "[2, 1, 3, 3]", "float32", "train_loss",
                     "predict: one view of each image (no test-time augmentation)"):
        assert expected in result.output, expected


def test_inspect_json_is_machine_readable_and_matches_the_weights(tmp_path):
    model = tiny_model()
    path = model.save(tmp_path / "small.cnnkit")
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["version"] == "1.1" and info["classes"] == ["cat", "dog", "owl"]
    assert info["preprocess"] == {"divide": 255.0, "subtract": 0.5}
    assert [layer["type"] for layer in info["layers"]] == ["conv2d", "relu", "maxpool2d", "flatten", "dense", "softmax"]
    assert info["providers"]["dense"]["dist"] == "cnnkit"
    assert info["training"]["history"] == [{"epoch": 1, "train_loss": 1.25}]
    shapes = {w["name"]: w["shape"] for w in info["weights"]}
    assert shapes == {name: list(w.shape) for name, w in model.weights.items()}
    assert info["total_params"] == sum(w.size for w in model.weights.values())


def test_inspect_works_when_a_layer_plugin_is_not_installed(tmp_path):
    # A bundle made with a plugin this machine lacks: inspect shows it; loading names what to install.
    payload = payload_of(bundle.encode(tiny_model()))
    payload["spec"]["layers"][1] = {"type": "mystery_act", "sharpness": 2}
    payload["providers"]["mystery_act"] = {"dist": "cnnkit-mystery", "version": "3.1.4"}
    del payload["providers"]["relu"]
    path = tmp_path / "foreign.cnnkit"
    path.write_bytes(repack(payload))
    shown = runner.invoke(app, ["inspect", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["layers"][1] == {"index": 1, "type": "mystery_act", "config": {"sharpness": 2}, "params": 0, "provider": "cnnkit-mystery 3.1.4", "installed": None, "provenance": "missing"}
    loaded = runner.invoke(app, ["predict", str(path), str(path)])
    assert loaded.exit_code == 1
    assert "comes from cnnkit-mystery 3.1.4, which is not installed: pip install cnnkit-mystery" in loaded.output


def test_inspect_imports_no_layer_module(tmp_path):
    path = tiny_model().save(tmp_path / "small.cnnkit")
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cnnkit.cli import app\n"
        f"result = CliRunner().invoke(app, ['inspect', {str(path)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(('cnnkit.layers.', 'cnnkit_extra')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    # base.py holds the contract every layer imports, legacy.py its adapter; no layer implementation may be loaded.
    assert set(out) <= {"cnnkit.layers.base", "cnnkit.layers.legacy"}, out


@pytest.mark.parametrize("content", [b"", b"\x93\x01\x02\x03", b"not a bundle at all"])
def test_inspect_bad_file_is_one_line_and_exit_1(tmp_path, content):
    path = tmp_path / "bad.cnnkit"
    path.write_bytes(content)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_inspect_never_cuts_a_qualified_type_at_80_columns(tmp_path):
    # Issue 24, finding 9: rich cut the layer, provider and installed columns to "acme-very-lo…".
    long_type = "acme-very-long-distribution-name-for-layers:a_rather_long_layer_type_name"
    payload = payload_of(bundle.encode(tiny_model()))
    payload["spec"]["layers"][1] = {"type": long_type}
    payload["providers"][long_type] = {"dist": "acme-very-long-distribution-name-for-layers", "version": "10.20.30"}
    del payload["providers"]["relu"]
    path = tmp_path / "long.cnnkit"
    path.write_bytes(repack(payload))
    result = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80 and "…" not in result.output
    rows = [cells for cells in (line.split("│") for line in result.output.splitlines()) if len(cells) == 8]  # the layers table
    assert long_type in "".join(cells[2].strip() for cells in rows)
    assert "acme-very-long-distribution-name-for-layers 10.20.30" in "".join(cells[5].strip() for cells in rows)
