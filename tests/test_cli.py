"""The `cnnkit` command line end to end: CliRunner for each command, and one real subprocess.

Bad input must give one line on stderr starting with "error:", exit 1, no traceback, and no bundle
or temporary file left in the output folder; usage errors exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from conftest import SEED_SPEC, TINY_SPEC, synthetic_images, write_idx

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str):
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def no_bundle_left(folder: Path):
    leftovers = [p.name for p in folder.iterdir() if p.suffix in (".cnnkit", ".tmp", ".part") or p.name.startswith(".")]
    assert leftovers == [], leftovers


@pytest.fixture
def work(tmp_path, synthetic_dir):
    """A folder with a tiny spec (reading the synthetic dataset), images to classify, and an out/ folder."""
    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)})
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, synthetic_dir):
    """A bundle trained through `cnnkit run` (3 epochs on the synthetic data), plus inputs for predict."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("cli-bundle")
    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)})
    (folder / "tiny.json").write_text(json.dumps(spec))
    result = cli("run", folder / "tiny.json", "--out", folder / "tiny.cnnkit", "--quiet", "--run-dir", folder / "runs")  # module scope: before the autouse CNNKIT_RUN_DIR
    assert result.exit_code == 0, result.output
    images, labels = synthetic_images(4, 11)
    np.save(folder / "four.npy", images)
    Image.fromarray(images[0]).save(folder / "one.png")
    return folder / "tiny.cnnkit", folder, labels


# -- happy paths -----------------------------------------------------------------------------------


def test_validate_the_seed_spec():
    result = cli("validate", SEED_SPEC)
    assert result.exit_code == 0
    assert "8 layers" in result.stdout and "12,832 parameters" in result.stdout and "[10]" in result.stdout


def test_summary_table_and_json():
    table = cli("summary", SEED_SPEC)
    assert table.exit_code == 0
    for text in ("conv2d", "maxpool2d", "[6, 14, 14]", "[1176]", "11,770", "12,832"):
        assert text in table.stdout
    data = json.loads(cli("summary", SEED_SPEC, "--json").stdout)
    assert data["total_params"] == 12_832 and data["input_shape"] == [1, 28, 28]
    assert [row["params"] for row in data["layers"]] == [156, 0, 906, 0, 0, 0, 11_770, 0]
    assert data["layers"][6]["output_shape"] == [10] and data["layers"][0]["provider"]


def test_summary_and_validate_take_overrides():
    data = json.loads(cli("summary", SEED_SPEC, "--json", "--set", "layers[0].filters=8").stdout)
    assert data["layers"][0]["output_shape"] == [8, 28, 28] and data["layers"][0]["params"] == 8 * 25 + 8
    assert cli("validate", SEED_SPEC, "--set", "train.epochs=1", "-s", "data.train_limit=2000").exit_code == 0


def test_run_writes_a_bundle_with_overrides(work):
    result = cli("run", work / "tiny.json", "--out", work / "out" / "m.cnnkit", "--set", "train.epochs=2", "--set", "data.train_limit=100")
    assert result.exit_code == 0, result.output
    assert "on 100 images" in result.stdout and "epoch 2:" in result.stdout and "epoch 3:" not in result.stdout
    assert sorted(p.name for p in (work / "out").iterdir()) == ["m.cnnkit"]
    info = json.loads(cli("evaluate", work / "out" / "m.cnnkit", "--json").stdout)
    assert info["examples"] == 100  # the bundle's own data.dir: the synthetic test set


def test_run_quiet_prints_nothing_and_default_name(work, monkeypatch):
    monkeypatch.chdir(work)
    result = cli("run", "tiny.json", "--quiet", "--set", "train.epochs=1")
    assert result.exit_code == 0 and result.stdout == ""
    assert (work / "tiny.cnnkit").is_file()


def test_predict_png_and_npy(bundle):
    path, folder, _ = bundle
    result = cli("predict", path, folder / "one.png", folder / "four.npy")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"{folder / 'one.png'}: ") and lines[1].startswith(f"{folder / 'four.npy'}[0]: ")
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]  # the PNG holds the .npy's first image
    write_idx(folder / "four-idx3-ubyte.gz", np.load(folder / "four.npy"))
    from_idx = cli("predict", path, folder / "four-idx3-ubyte.gz")
    assert from_idx.exit_code == 0, from_idx.output
    assert [l.split(": ", 1)[1] for l in from_idx.stdout.strip().splitlines()] == [l.split(": ", 1)[1] for l in lines[1:]]


def test_predict_json_top_k_matches_the_library(bundle):
    import cnnkit

    path, folder, labels = bundle
    results = json.loads(cli("predict", path, folder / "four.npy", "--json", "--top", "3").stdout)
    model = cnnkit.load(path)
    proba = model.predict_proba(np.load(folder / "four.npy"))
    assert len(results) == 4
    for row, r in zip(proba, results):
        assert [t["index"] for t in r["top"]] == list(np.argsort(-row)[:3])
        assert r["top"][0]["probability"] == pytest.approx(float(row.max()))
        assert r["top"][0]["class"] == model.classes[r["top"][0]["index"]]
    assert [r["top"][0]["index"] for r in results] == list(labels)  # the tiny net learned these


def test_evaluate_with_data_dir_and_limit(bundle, synthetic_dir):
    path, _, _ = bundle
    result = cli("evaluate", path, "--data-dir", synthetic_dir, "--limit", "50")
    assert result.exit_code == 0, result.output
    assert "on 50 test images" in result.stdout and "accuracy" in result.stdout and "macro-F1" in result.stdout
    scores = json.loads(cli("evaluate", path, "--data-dir", synthetic_dir, "--json").stdout)
    assert scores["examples"] == 100 and scores["accuracy"] > 0.9
    # --set data.test_limit limits it too (it was silently ignored); with --limit the smaller holds
    for extra, expected in ((["--set", "data.test_limit=30"], 30), (["--set", "data.test_limit=30", "--limit", "20"], 20),
                            (["--set", "data.test_limit=30", "--limit", "40"], 30)):
        scores = json.loads(cli("evaluate", path, "--data-dir", synthetic_dir, "--json", *extra).stdout)
        assert scores["examples"] == expected, extra


# -- bad input: one line, exit 1, nothing left behind -----------------------------------------------


def test_malformed_json(work):
    (work / "bad.json").write_text('{"name": "x",,}')
    for command in ("validate", "summary", "run"):
        assert_one_line_error(cli(command, work / "bad.json"), "bad.json", "malformed JSON at line 1 column")
    no_bundle_left(work)


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("layers[0].type=conv", ["layers[0].type", "unknown layer type 'conv'", "did you mean 'conv2d'?"]),
        ("layers[0].kernel_size=\"3\"", ["layers[0].kernel_size", "integer", 'Received: "3"']),
        ("train.epochs=true", ["train.epochs", "Received: true"]),
        ("layers[0].kernel_size=29", ["layers[0]", "output would be empty"]),
        ("layers[2].pool_size=40", ["layers[2]", "pool_size=40"]),
        ("train.optimizer.lr=0", ["train.optimizer.lr", "greater than 0"]),
        ("layers[7].units=3", ["layers[7] is not an existing list item"]),
    ],
)
def test_bad_specs_fail_in_every_command(work, override, fragments):
    for command in ("validate", "summary", "run"):
        extra = ["--out", work / "out" / "m.cnnkit"] if command == "run" else []
        assert_one_line_error(cli(command, work / "tiny.json", "--set", override, *extra), *fragments)
    no_bundle_left(work / "out")


def test_missing_data_directory(work):
    result = cli("run", work / "tiny.json", "--set", f"data.dir={work / 'nowhere'}", "--out", work / "out" / "m.cnnkit")
    assert_one_line_error(result, "data directory not found", "nowhere")
    no_bundle_left(work / "out")


def test_evaluate_missing_data_directory(bundle, tmp_path):
    path, _, _ = bundle
    assert_one_line_error(cli("evaluate", path, "--data-dir", tmp_path / "nowhere"), f"data.dir {tmp_path / 'nowhere'} (from --data-dir) not found")


def test_dataset_not_found_anywhere(work, monkeypatch):
    monkeypatch.chdir(work)
    monkeypatch.setattr("cnnkit.data.fashion_mnist.DEBIAN_DIR", work / "no-debian")
    spec = json.loads((work / "tiny.json").read_text())
    del spec["data"]["dir"]
    (work / "nodir.json").write_text(json.dumps(spec))
    result = cli("run", work / "nodir.json", "--out", work / "out" / "m.cnnkit")
    assert_one_line_error(result, "Fashion-MNIST not found", "CNNKIT_DATA", "apt-get install dataset-fashion-mnist")
    no_bundle_left(work / "out")


def test_output_folder_that_does_not_exist_fails_before_training(work):
    result = cli("run", work / "tiny.json", "--out", work / "missing" / "m.cnnkit")
    assert_one_line_error(result, "folder", "does not exist")
    assert "epoch" not in result.stdout and not (work / "missing").exists()
    assert_one_line_error(cli("run", work / "tiny.json", "--out", work / "out"), "is a directory")
    no_bundle_left(work / "out")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_training_failure_leaves_no_bundle(work):
    result = cli("run", work / "tiny.json", "--set", "train.optimizer.lr=1e30", "--set", "train.epochs=1", "--out", work / "out" / "m.cnnkit")
    assert_one_line_error(result, "diverged")
    no_bundle_left(work / "out")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverged_run_warns_even_when_quiet_and_fails_when_strict(work):
    diverging = ("--set", 'train.optimizer={"type": "sgd", "lr": 1000}', "--set", "train.epochs=2")
    quiet = cli("run", work / "tiny.json", *diverging, "--quiet", "--out", work / "out" / "q.cnnkit")
    assert quiet.exit_code == 0 and quiet.stdout == "", quiet.output
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("warning: the training loss grew from 2.3")
    assert lines[1].startswith("warning: the final test accuracy") and "at chance level" in lines[1]
    assert (work / "out" / "q.cnnkit").is_file()
    strict = cli("run", work / "tiny.json", *diverging, "--quiet", "--strict", "--out", work / "out" / "s.cnnkit")
    assert strict.exit_code == 1 and "Traceback" not in strict.output
    assert strict.stderr.strip().splitlines()[-1] == "error: --strict: training ended with 2 warnings; no bundle written"
    assert not (work / "out" / "s.cnnkit").exists()
    healthy = cli("run", work / "tiny.json", "--quiet", "--strict", "--out", work / "out" / "h.cnnkit")
    assert healthy.exit_code == 0 and healthy.output == ""


def test_existing_bundle_survives_a_failed_run(work, bundle):
    path, _, _ = bundle
    target = work / "out" / "keep.cnnkit"
    target.write_bytes(path.read_bytes())
    assert_one_line_error(cli("run", work / "tiny.json", "--set", "data.dir=/nowhere", "--out", target))
    assert target.read_bytes() == path.read_bytes()
    assert [p.name for p in (work / "out").iterdir()] == ["keep.cnnkit"]


def test_predict_bad_inputs(bundle, tmp_path):
    path, folder, _ = bundle
    (tmp_path / "notes.txt").write_text("not an image")
    assert_one_line_error(cli("predict", path, tmp_path / "notes.txt"), "notes.txt", "not an image")
    assert_one_line_error(cli("predict", path, tmp_path / "missing.png"), "file not found")
    np.save(tmp_path / "wrong.npy", np.zeros((2, 32, 32), np.uint8))
    assert_one_line_error(cli("predict", path, tmp_path / "wrong.npy"), "Received: [2, 32, 32]")
    assert_one_line_error(cli("predict", tmp_path / "missing.cnnkit", folder / "one.png"), "bundle not found")
    (tmp_path / "junk.cnnkit").write_bytes(b"\x00not msgpack at all")
    assert_one_line_error(cli("predict", tmp_path / "junk.cnnkit", folder / "one.png"))
    # A picture where the bundle belongs, a picture renamed .npy: named as pictures, not as broken
    # msgpack ("map keys must be strings") or pickled data ("allow_pickle=", "pickle.load()").
    assert_one_line_error(cli("predict", folder / "one.png", folder / "one.png"), "one.png is not a cnnkit bundle (it looks like a PNG image)")
    (tmp_path / "renamed.npy").write_bytes((folder / "one.png").read_bytes())
    assert_one_line_error(cli("predict", path, tmp_path / "renamed.npy"), "renamed.npy: not a .npy file (it looks like a PNG image)")
    assert_one_line_error(cli("evaluate", tmp_path / "missing.cnnkit"), "bundle not found")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["predict", "x.cnnkit"],
        ["no-such-command"],
        ["validate", "s.json", "--no-such-option"],
        ["evaluate", "x.cnnkit", "--limit", "0"],
        ["predict", "x.cnnkit", "a.png", "--top", "zero"],
    ],
)
def test_usage_errors_exit_2(args):
    assert cli(*args).exit_code == 2


def test_debug_shows_the_traceback_instead(work):
    (work / "bad.json").write_text("{")
    result = cli("--debug", "validate", work / "bad.json")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "SpecError"


# -- one real process ------------------------------------------------------------------------------


def test_real_subprocess_end_to_end(work):
    env = {**os.environ, "CNNKIT_OFFLINE": "1"}
    out = work / "out" / "sub.cnnkit"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "cnnkit.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=120)

    trained = run("run", work / "tiny.json", "--set", "train.epochs=2", "--out", out)
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2:" in trained.stdout and trained.stderr == ""  # no progress bar when not a terminal
    images, _ = synthetic_images(2, 3)
    np.save(work / "two.npy", images)
    predicted = run("predict", out, work / "two.npy")
    assert predicted.returncode == 0 and len(predicted.stdout.strip().splitlines()) == 2
    bad = run("validate", work / "nope.json")
    assert bad.returncode == 1 and bad.stdout == "" and bad.stderr.strip() == f"error: spec file not found: {work / 'nope.json'}"
    diverged = run("run", work / "tiny.json", "--set", "train.optimizer.lr=1e30", "--out", work / "out" / "bad.cnnkit")
    lines = diverged.stderr.strip().splitlines()  # one line: no numpy overflow warnings around it
    assert diverged.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: training diverged at epoch 1, step ")
    assert sorted(p.name for p in (work / "out").iterdir()) == ["sub.cnnkit"]
    usage = run("run")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_default_bundle_name_stays_in_the_current_folder(work, monkeypatch):
    # The spec's name names the default output file, so it is a safe file name: no folders, no empty name.
    monkeypatch.chdir(work)
    (work / "elsewhere").mkdir()
    for name in ("elsewhere/../../escape", '""', ".hidden", "a" * 101, "nul\\u0000byte"):
        result = cli("run", "tiny.json", "--quiet", "--set", "train.epochs=1", "--set", f"name={name}")
        assert_one_line_error(result, "name: name must be 1-100 letters, digits")
    assert sorted(p.name for p in work.iterdir()) == ["elsewhere", "out", "tiny.json"]
    result = cli("run", "tiny.json", "--quiet", "--set", "train.epochs=1", "--set", "name=" + "b" * 100)
    assert result.exit_code == 0, result.output
    assert (work / ("b" * 100 + ".cnnkit")).is_file()
