"""`cnnkit report` and `cnnkit show`: PNGs of the stated sizes, an index.html linking them, the install hint without matplotlib."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.report import worst_mistakes
from conftest import REAL_DATA, SEED_SPEC

pytest.importorskip("matplotlib")
runner = CliRunner()

SIZES = {"curves.png": (1000, 400), "confusion.png": (800, 700), "worst.png": (880, 930)}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_png(path, size):
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == size, (path.name, image.size)
        colours = np.asarray(image.convert("L"))
        assert colours.min() < 100 and colours.max() > 200  # drawn on, not a blank canvas


def assert_report(folder, expected_pictures=SIZES):
    for name, size in expected_pictures.items():
        assert_png(folder / name, size)
    html = (folder / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', html)) == sorted(expected_pictures)
    return html


@pytest.fixture
def spec_file(tmp_path, tiny_spec):
    tiny_spec["train"]["epochs"] = 2
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_spec))
    return tmp_path / "tiny.json"


def test_run_writes_the_report_into_its_folder_and_report_reads_a_run(spec_file, tmp_path):
    result = cli("run", spec_file, "--out", tmp_path / "m.cnnkit", "--run-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny"
    html = assert_report(folder / "report")
    assert "T-shirt/top" in html and "macro avg" in html and "conv2d" in html
    again = cli("report", folder, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert_report(tmp_path / "again")


def test_report_on_a_bundle_escapes_what_the_bundle_says(spec_file, tmp_path):
    model = cnnkit.train(str(spec_file))
    model.classes[0] = "<script>alert(1)</script>"
    cnnkit.save(model, tmp_path / "m.cnnkit")
    result = cli("report", tmp_path / "m.cnnkit")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "m-report" / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_worst_mistakes_are_the_surest_wrong_answers():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 0, 1])
    assert list(worst_mistakes(proba, labels, 2)) == [3, 1]  # 0.95 wrong, then 0.8 wrong; 0.6 wrong is third
    assert list(worst_mistakes(proba, labels, 10)) == [3, 1, 2]


def test_show_writes_a_grid_of_training_images(spec_file, tmp_path):
    result = cli("show", spec_file, "--out", tmp_path / "first.png")
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "first.png", (660, 710))  # 3 x 3 cells of 220 px, plus the title
    assert cli("show", spec_file, "--out", tmp_path / "four.png", "--count", "4").exit_code == 0
    assert_png(tmp_path / "four.png", (440, 490))


def test_without_matplotlib_one_line_names_the_extra(spec_file, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    for args in (("show", spec_file), ("report", tmp_path / "whatever.cnnkit")):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr == "error: pictures need matplotlib, which is not installed: pip install 'cnnkit[plots]'\n"


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_report_on_a_real_trained_bundle(tmp_path):
    spec = json.loads(SEED_SPEC.read_text())
    spec["data"].update(dir=str(REAL_DATA), train_limit=1000, test_limit=500)
    spec["train"].update(epochs=2, batch_size=16, optimizer={"type": "sgd", "lr": 0.05})
    cnnkit.save(cnnkit.train(spec), tmp_path / "real.cnnkit")
    result = cli("report", tmp_path / "real.cnnkit", "--out", tmp_path / "report", "--limit", "500")
    assert result.exit_code == 0, result.output
    html = assert_report(tmp_path / "report")
    assert "Ankle boot" in html and "500 images" in html


def test_show_and_report_never_clobber_a_file_that_is_not_theirs(spec_file, tmp_path):
    """`cnnkit show --out spec.json` once replaced the spec with a PNG; like bundles, only --force may."""
    spec_text = spec_file.read_text()
    result = cli("show", spec_file, "--out", spec_file)
    assert result.exit_code == 1, result.output
    assert "refusing to overwrite" in result.output and "--force" in result.output
    assert spec_file.read_text() == spec_text
    assert cli("show", spec_file, "--out", tmp_path / "grid.png").exit_code == 0
    assert cli("show", spec_file, "--out", tmp_path / "grid.png").exit_code == 0  # an earlier PNG is replaced
    (tmp_path / "notes.txt").write_text("mine")
    assert cli("show", spec_file, "--out", tmp_path / "notes.txt", "--force").exit_code == 0
    assert_png(tmp_path / "notes.txt", (660, 710))

    model = cnnkit.train(str(spec_file))
    cnnkit.save(model, tmp_path / "m.cnnkit")
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("<html>my own page</html>")
    result = cli("report", tmp_path / "m.cnnkit", "--out", mine)
    assert result.exit_code == 1, result.output
    assert (mine / "index.html").read_text() == "<html>my own page</html>"
    assert not (mine / "curves.png").exists()
    assert cli("report", tmp_path / "m.cnnkit", "--out", mine, "--force").exit_code == 0
    assert cli("report", tmp_path / "m.cnnkit", "--out", mine).exit_code == 0  # its own report is replaced
    assert_report(mine)
