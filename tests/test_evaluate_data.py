"""Data paths that travel (issue 23, findings 13 and 14): a bundle records its data paths as they were
given where it was trained, so `evaluate` and `report` can name the test data anew (--data, --data-dir,
--set data.*), read only test data, and say which path was tried from which folder; `report RUN`
reports the bundle the run delivered, not its last checkpoint."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data import load_test_set
from cnnkit.errors import SpecError
from conftest import TINY_SPEC, one_line_error, synthetic_images

# The fixtures train tiny models whose accuracy ends near chance: not what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])




def evaluated(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def npz_bundle(tmp_path, monkeypatch):
    """A bundle trained in tmp_path/train on digits16.npz, named relative to that folder."""
    train = tmp_path / "train"
    train.mkdir()
    images, labels = synthetic_images(96, 1)
    np.savez(train / "digits16.npz", x_train=images[:64], y_train=labels[:64], x_test=images[64:], y_test=labels[64:])
    monkeypatch.chdir(train)
    model = cnnkit.train({**TINY_SPEC, "data": {"dataset": "npz", "path": "digits16.npz"}, "train": {**TINY_SPEC["train"], "epochs": 1}})
    model.save(train / "digits.cnnkit")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return train / "digits.cnnkit"


# -- finding 13: naming the test data -----------------------------------------------------------------


def test_a_missing_relative_path_says_what_was_tried_from_where_and_how_to_name_it(npz_bundle, tmp_path):
    line = one_line_error(cli("evaluate", npz_bundle), f"npz: data.path digits16.npz (from the bundle's spec) not found, looked for in {tmp_path / 'elsewhere'}",
                          "--data PATH")
    assert "file not found: digits16.npz" not in line


def test_data_names_the_test_file_and_set_overrides_the_data_section(npz_bundle, tmp_path):
    by_data = evaluated(cli("evaluate", npz_bundle, "--data", tmp_path / "train" / "digits16.npz", "--json"))
    by_set = evaluated(cli("evaluate", npz_bundle, "--set", f"data.path={tmp_path / 'train' / 'digits16.npz'}", "--json"))
    assert by_data == by_set and by_data["examples"] == 32
    one_line_error(cli("evaluate", npz_bundle, "--data", tmp_path / "nope.npz"), f"data.path {tmp_path / 'nope.npz'} (from --data) not found")


def test_an_npz_of_test_arrays_alone_is_enough(npz_bundle, tmp_path):
    images, labels = synthetic_images(96, 1)
    np.savez(tmp_path / "only-test.npz", x_test=images[64:], y_test=labels[64:])
    full = evaluated(cli("evaluate", npz_bundle, "--data", tmp_path / "train" / "digits16.npz", "--json"))
    assert evaluated(cli("evaluate", npz_bundle, "--data", tmp_path / "only-test.npz", "--json")) == full


def test_set_changes_only_the_data_section(npz_bundle):
    one_line_error(cli("evaluate", npz_bundle, "--set", "train.epochs=1"), "--set here changes only the test data (data.*). Received: train.epochs=1")
    with pytest.raises(SpecError, match="only the test data"):
        load_test_set(cnnkit.load(npz_bundle).spec.data, (1, 28, 28), overrides=["input.shape=[1,2,3]"])


def test_test_data_with_another_class_count_is_one_line(npz_bundle, tmp_path):
    images, labels = synthetic_images(8, 2)
    np.savez(tmp_path / "three.npz", x_test=images, y_test=labels % 3, classes=np.array(["a", "b", "c"]))
    one_line_error(cli("evaluate", npz_bundle, "--data", tmp_path / "three.npz"), "the test data has 3 classes", "the model 10")


def write_folder(root, images, labels, names=("zero", "one", "two")):
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(root / names[int(label)] / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder_bundle(tmp_path, monkeypatch):
    """A bundle trained in tmp_path/site with data.path photos/train and data.test_path photos/test (relative)."""
    images, labels = synthetic_images(120, 3)
    labels %= 3
    site = tmp_path / "site"
    write_folder(site / "photos" / "train", images[:90], labels[:90])
    write_folder(site / "photos" / "test", images[90:], labels[90:])
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"] = {"dataset": "image-folder", "path": "photos/train", "test_path": "photos/test"}
    spec["layers"][-2]["units"] = 3
    spec["train"]["epochs"] = 1
    monkeypatch.chdir(site)
    model = cnnkit.train(spec)
    model.save(site / "photos.cnnkit")
    return site / "photos.cnnkit"


def test_an_image_folder_bundle_with_test_path_is_evaluated_anywhere_from_its_test_folder_alone(image_folder_bundle, tmp_path, monkeypatch):
    expected = evaluated(cli("evaluate", image_folder_bundle, "--json"))
    assert expected["examples"] == 30
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "site" / "photos" / "test", moved / "test")
    shutil.rmtree(tmp_path / "site" / "photos")  # the training folder is gone: evaluation must not need it
    monkeypatch.chdir(moved)
    one_line_error(cli("evaluate", image_folder_bundle), "image-folder: data.test_path photos/test (from the bundle's spec) not found",
                   f"looked for in {moved}", "--data PATH", "--data-dir DIR")
    assert evaluated(cli("evaluate", image_folder_bundle, "--data", "test", "--json")) == expected
    assert evaluated(cli("evaluate", image_folder_bundle, "--set", "data.test_path=test", "--json")) == expected


def test_image_folder_without_test_path_decodes_only_the_held_out_pictures(tmp_path, monkeypatch):
    from cnnkit.data.sources import image_folder

    images, labels = synthetic_images(60, 4)
    write_folder(tmp_path / "photos", images, labels % 3)
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"] = {"dataset": "image-folder", "path": str(tmp_path / "photos"), "test_fraction": 0.25, "cache": False}
    spec["layers"][-2]["units"] = 3
    model = cnnkit.build(spec)
    full = cnnkit.data.load_dataset(model.spec.data, (1, 28, 28))
    model.classes = full.classes  # the folder names, as training sets them
    decoded = []
    real = image_folder.read_picture
    monkeypatch.setattr(image_folder, "read_picture", lambda path, *a: decoded.append(path) or real(path, *a))
    test = load_test_set(model.spec.data, (1, 28, 28), classes=model.classes)
    assert len(decoded) == len(test.test_labels) == len(full.test_labels) < 60 / 3  # the held-out quarter, not all 60
    np.testing.assert_array_equal(test.test_images, full.test_images)
    np.testing.assert_array_equal(test.test_labels, full.test_labels)


# -- finding 14: `report RUN` reports the delivered bundle --------------------------------------------


@pytest.fixture
def finished_run(tmp_path, tiny_spec):
    pytest.importorskip("matplotlib")
    tiny_spec["data"]["validation"] = 48  # restore_best: the delivered weights are the best epoch's, not the last's
    tiny_spec["train"]["epochs"] = 2
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_spec))
    result = cli("run", tmp_path / "tiny.json", "--out", tmp_path / "m.cnnkit", "--run-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "tiny"


def test_report_of_a_run_shows_the_delivered_bundle_in_the_runs_report_folder(finished_run, tmp_path):
    result = cli("report", finished_run)
    assert result.exit_code == 0, result.output
    html = (finished_run / "report" / "index.html").read_text()
    assert f"From {tmp_path / 'm.cnnkit'}." in html and "last.cnnkit" not in html


def test_a_bundle_named_inside_a_run_gets_its_own_report_folder(finished_run):
    before = (finished_run / "report" / "index.html").read_bytes()
    result = cli("report", finished_run / "last.cnnkit")
    assert result.exit_code == 0, result.output
    assert (finished_run / "last-report" / "index.html").is_file()
    assert (finished_run / "report" / "index.html").read_bytes() == before  # the run's report is not replaced


def test_report_of_a_run_whose_bundle_was_replaced_names_the_runs_own_bundles(finished_run, tmp_path, tiny_spec):
    cnnkit.build(tiny_spec).save(tmp_path / "m.cnnkit")  # another model, same name
    one_line_error(cli("report", finished_run), f"{finished_run} delivered {tmp_path / 'm.cnnkit'}, which has been replaced by another model since",
                   f"{finished_run / 'best.cnnkit'} (the best epoch)", f"{finished_run / 'last.cnnkit'} (the last checkpoint)")
    (tmp_path / "m.cnnkit").unlink()
    one_line_error(cli("report", finished_run), "which is gone")


def test_report_of_a_run_that_delivered_nothing_says_so(finished_run):
    (finished_run / "delivered.json").unlink()  # as a run stopped before its end leaves it
    one_line_error(cli("report", finished_run), "records no bundle it delivered", "last.cnnkit (the last checkpoint)")
