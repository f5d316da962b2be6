"""Issue 24, finding 8: dataset sources have a documented contract (docs/plugins-sources.md), a
conformance kit (`cnnkit check-source`, ``cnnkit.testing.check_source``) and a scaffold (`cnnkit
new-source`). Hostile sources are fake installed distributions; the guide's own example is run.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.testing import check_source, run_source_checks

from fakeplugins import CNNKIT, subprocess_env, write_dist

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

# A correct in-memory source, and the ways a source can break its contract, chosen by BUG.
SOURCE = '''
import numpy as np
from pydantic import Field
from cnnkit.data import Dataset, DatasetSource, SourceParams

BUG = {bug!r}


class Blobs(DatasetSource):
    folder_key = "path"

    class Params(SourceParams):
        path: str = "unused"
        count: int = Field(60, gt=0)
        {extra_field}

    def load(self, input_shape):
        rng = np.random.default_rng(0)
        labels = np.arange(self.params.count) % 3
        images = (rng.integers(0, 60, (self.params.count, *input_shape)) + 80 * labels[:, None, None, None]).astype(np.uint8)
        if BUG == "shuffles with np.random":
            order = np.random.permutation(len(labels))
            images, labels = images[order], labels[order]
        if BUG == "a label out of range":
            labels = labels.copy()
            labels[5] = 3
        if BUG == "int64 images":
            images = images.astype(np.int64)
        train, test = slice(0, 40), slice(40, None)
        if BUG == "an empty test set":
            test = slice(0, 0)
        return Dataset(images[train], labels[train], images[test], labels[test], ["a", "b", "c"], "blobs")

    def load_test(self, input_shape, classes):
        data = self.load(input_shape)
        test = slice(None, None, -1) if BUG == "load_test reverses the test set" else slice(None)
        return Dataset(data.test_images[:0], data.test_labels[:0], data.test_images[test], data.test_labels[test], data.classes, "blobs")

    def test_files(self):
        return ["path", "folder"] if BUG == "test_files names no field" else ["path"]
'''


def blobs(site: Path, bug: str = "none", extra_field: str = "") -> str:
    write_dist(site, "fake-blobs", "0.1", {}, {"fake_blobs_mod": SOURCE.format(bug=bug, extra_field=extra_field)},
               datasets={"blobs": "fake_blobs_mod:Blobs"})
    return "blobs"


@pytest.fixture
def site(plugin_dir, monkeypatch):
    from cnnkit.data import DATASETS

    monkeypatch.setattr(DATASETS, "_resolved", {})
    return plugin_dir


def results_of(name, params=None, shape=(1, 6, 6)):
    return {r.name: r for r in run_source_checks(name, params, shape)[1]}


def test_a_correct_source_passes_every_check(site):
    results = results_of(blobs(site))
    assert [(r.name, r.status) for r in results.values()] == [
        ("source contract", "pass"), ("load", "pass"), ("labels", "pass"), ("determinism", "pass"), ("test data alone", "pass"), ("spec and training", "pass")]
    assert results["test data alone"].detail == "load_test reads load's 20 test examples alone"
    assert results["load"].detail == "40 train and 20 test images, uint8 [1, 6, 6] each (input.shape [1, 6, 6]); labels int64; 3 classes"


@pytest.mark.parametrize("bug, check, detail", [
    ("shuffles with np.random", "determinism", "two loads with the same params gave different train_images: a source gives the same examples in the same order every time"),
    ("a label out of range", "load", "blobs: train labels range over 0..3, but there are 3 classes (0..2)"),
    ("int64 images", "load", "train_images must be a numpy array of uint8 or float pixel values. Received: int64"),
    ("an empty test set", "load", "the test set is empty: cnnkit reports test metrics after training and `cnnkit evaluate` reads it"),
    ("load_test reverses the test set", "test data alone", "load_test gave other test examples than load: `cnnkit evaluate` would score a model on other data"),
    ("test_files names no field", "test data alone", "test_files() names ['folder'], which are not Params fields (path, count)"),
])
def test_a_broken_source_fails_the_check_that_names_its_bug(site, bug, check, detail):
    results = results_of(blobs(site, bug))
    assert results[check].status == "fail" and results[check].detail.startswith(detail), results[check].detail
    with pytest.raises(AssertionError, match=f"{check} failed"):
        check_source("blobs", {}, (1, 6, 6))


def test_params_that_a_spec_could_never_set_are_named(site):
    results = results_of(blobs(site, extra_field="validation: float = 0.1"))
    assert results["source contract"].status == "fail"
    assert results["source contract"].detail.startswith("Params declares ['validation'], which a spec's data section keeps for every source")


def test_builtin_sources_pass(synthetic_dir, tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((8, 5, 5), np.uint8), y_train=np.arange(8) % 2, x_test=np.ones((4, 5, 5), np.uint8), y_test=np.arange(4) % 2)
    for name, params in [("fashion-mnist", {"dir": str(synthetic_dir)}), ("idx-folder", {"path": str(synthetic_dir), "train_images": "train-images-idx3-ubyte.gz"}),
                         ("npz", {"path": str(tmp_path / "d.npz")})]:
        shape, results = run_source_checks(name, params)
        failed = [(r.name, r.detail) for r in results if r.status == "fail"]
        assert not failed, (name, failed)
        assert shape in {(1, 28, 28), (1, 5, 5)}  # taken from the arrays when no input shape is given


def test_check_source_command_exit_codes(site):
    blobs(site)
    ok = runner.invoke(app, ["check-source", "blobs", "--input-shape", "1,6,6"])
    assert ok.exit_code == 0 and ok.output.splitlines()[0] == "check-source blobs params={} input_shape=[1, 6, 6]"
    assert "  PASS  determinism: two loads give the same arrays and class names" in ok.output and ok.output.splitlines()[-1].startswith("ok: blobs passed ")
    bad_params = runner.invoke(app, ["check-source", "blobs", "--params", '{"count": 0}'])
    assert bad_params.exit_code == 2 and "blobs params.count" in bad_params.output
    unknown = runner.invoke(app, ["check-source", "blobz"])
    assert unknown.exit_code == 1 and "did you mean 'blobs'?" in unknown.output


def test_a_failing_source_exits_1_naming_the_check(site):
    blobs(site, "shuffles with np.random")
    result = runner.invoke(app, ["check-source", "blobs", "--input-shape", "1,6,6"])
    assert result.exit_code == 1 and "  FAIL  determinism: two loads with the same params gave different" in result.output
    assert "error: blobs: 2 check(s) failed: determinism, test data alone" in result.output  # its test set changes too


# --------------------------------------------------------------------------------------------------
# The guide's example source: it is what `cnnkit new-source` writes, and it trains.


def guide_example() -> str:
    guide = (ROOT / "docs" / "plugins-sources.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    return next(b for b in blocks if "class CsvPixels(DatasetSource)" in b)


def test_the_guides_example_is_what_new_source_writes(tmp_path):
    assert runner.invoke(app, ["new-source", "csv-pixels", "--out", str(tmp_path)]).exit_code == 0
    assert guide_example() == (tmp_path / "cnnkit-csv-pixels" / "cnnkit_csv_pixels" / "csv_pixels.py").read_text()


def write_csv(path: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    pixels = rng.integers(0, 60, (count, 36)) + 90 * labels[:, None]
    rows = "\n".join(",".join(map(str, [label, *row])) for label, row in zip(labels, pixels))
    path.write_text("label," + ",".join(f"pixel{i}" for i in range(1, 37)) + "\n" + rows + "\n")


def test_a_source_written_as_the_guide_describes_checks_and_trains(tmp_path):
    site, data = tmp_path / "site", tmp_path / "csvs"
    data.mkdir()
    write_csv(data / "train.csv", 120, 0)
    write_csv(data / "test.csv", 30, 1)
    write_dist(site, "acme-csv", "1.0", {}, {"acme_csv": guide_example()}, datasets={"csv-pixels": "acme_csv:CsvPixels"})
    env = subprocess_env(site)
    checked = subprocess.run([*CNNKIT, "check-source", "csv-pixels", "--params", json.dumps({"path": str(data)}), "--input-shape", "1,6,6"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    spec = {"name": "csv", "input": {"shape": [1, 6, 6]}, "data": {"dataset": "csv-pixels", "path": str(data)},
            "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "softmax"}],
            "train": {"epochs": 8, "batch_size": 10, "optimizer": {"type": "adam", "lr": 0.05}}}
    (tmp_path / "csv.json").write_text(json.dumps(spec))
    run = subprocess.run([*CNNKIT, "run", str(tmp_path / "csv.json"), "--quiet", "--out", str(tmp_path / "csv.cnnkit")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    scores = subprocess.run([*CNNKIT, "evaluate", str(tmp_path / "csv.cnnkit"), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert scores.returncode == 0, scores.stderr
    assert json.loads(scores.stdout)["accuracy"] > 0.9  # the classes differ in brightness: learnable


def test_the_guide_names_every_field_of_a_dataset():
    from dataclasses import fields

    from cnnkit.data import Dataset

    guide = (ROOT / "docs" / "plugins-sources.md").read_text()
    for field in fields(Dataset):
        assert f"`{field.name}`" in guide, field.name
    for name in ("DatasetSource", "SourceParams", "folder_key", "cnnkit.datasets", "check-source", "new-source"):
        assert name in guide, name
