"""Settings, output names and messages (issue 23, findings 19-22): a bad switch is an error, not a
guess; a name ending in "/" is a folder for every command; a run's data without a test set, or with
a stray label, is named for what it is; ``save(..., force=True)`` is there as documented."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data import load_dataset, load_fashion_mnist
from cnnkit.errors import DataError
from cnnkit.spec import validate_spec
from conftest import TINY_SPEC, one_line_error

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)




@pytest.fixture
def work(tmp_path, synthetic_dir):
    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)}, train=dict(TINY_SPEC["train"], epochs=1))
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    cnnkit.build(spec).save(tmp_path / "tiny.cnnkit")
    return tmp_path


# -- finding 19: CNNKIT_OFFLINE and CNNKIT_DATA -----------------------------------------------------


@pytest.mark.parametrize("value", ["true", "yes", "2", "on", "01"])
def test_a_bad_offline_switch_is_an_error_not_downloads_allowed(monkeypatch, synthetic_dir, value):
    monkeypatch.setenv("CNNKIT_OFFLINE", value)
    with pytest.raises(DataError, match=rf"CNNKIT_OFFLINE must be 1 \(never download\) or 0 .*Received: '{value}'"):
        load_fashion_mnist()
    with pytest.raises(DataError, match="CNNKIT_OFFLINE must be"):  # even when the folder is named and no download would happen
        load_fashion_mnist(synthetic_dir)


@pytest.mark.parametrize("value", ["0", "1", "", " 1 "])
def test_good_offline_values_are_accepted(monkeypatch, synthetic_dir, value):
    monkeypatch.setenv("CNNKIT_OFFLINE", value)
    assert len(load_fashion_mnist(synthetic_dir).test_labels) == 100


def test_offline_switch_in_a_run_is_one_line_before_training(work):
    result = cli("run", work / "tiny.json", "--out", work / "m.cnnkit", env={"CNNKIT_OFFLINE": "yes"})
    one_line_error(result, "CNNKIT_OFFLINE must be", "'yes'")
    assert "training" not in result.stdout


def test_cnnkit_data_naming_no_folder_is_an_error_not_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(DataError, match=r"CNNKIT_DATA names .*nonexistent, which does not exist; set it to the folder"):
        load_fashion_mnist()
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "afile"))
    with pytest.raises(DataError, match=r"afile, which is not a folder"):
        load_fashion_mnist()


def test_cnnkit_data_naming_a_folder_is_searched(monkeypatch, synthetic_dir):
    monkeypatch.setenv("CNNKIT_DATA", str(synthetic_dir))
    assert load_fashion_mnist().source == str(synthetic_dir)


# -- finding 20: no test images ---------------------------------------------------------------------


def test_an_npz_without_test_images_is_refused_at_load(tmp_path):
    x, y = np.zeros((32, 28, 28), np.uint8), np.arange(32) % 10
    np.savez(tmp_path / "notest.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    spec = {**TINY_SPEC, "data": {"dataset": "npz", "path": str(tmp_path / "notest.npz")}}
    with pytest.raises(DataError, match=r"npz: the test set is empty \(0 test images\)"):
        load_dataset(validate_spec(spec).data, (1, 28, 28))
    (tmp_path / "s.json").write_text(json.dumps(spec))
    result = cli("run", tmp_path / "s.json", "--out", tmp_path / "m.cnnkit")
    one_line_error(result, "the test set is empty")
    assert "training" not in result.stdout and not (tmp_path / "m.cnnkit").exists()


# -- finding 21: output names -----------------------------------------------------------------------


@pytest.mark.onnx
def test_export_out_ending_in_a_slash_names_a_folder(work):
    pytest.importorskip("onnxruntime")
    one_line_error(cli("export", work / "tiny.cnnkit", "--out", f"{work / 'NAME'}/"), "names a folder", "NAME/model.onnx")
    assert not (work / "NAME").exists()


def test_show_out_ending_in_a_slash_names_a_folder(work):
    pytest.importorskip("matplotlib")
    one_line_error(cli("show", work / "tiny.json", "--out", f"{work / 'NAME'}/"), "names a folder", "NAME/samples.png")
    assert not (work / "NAME").exists()


def test_schema_refusal_suggests_a_schema_name(work):
    one_line_error(cli("schema", "--out", f"{work / 'NAME'}/"), "names a folder", "NAME/schema.json")
    one_line_error(cli("schema", "--out", work), "is a directory", "schema.json")


@pytest.mark.onnx
def test_export_out_with_a_name_too_long_is_one_line(work):
    pytest.importorskip("onnxruntime")
    one_line_error(cli("export", work / "tiny.cnnkit", "--out", work / ("x" * 260)), "file name is 260 bytes, more than the 255")


def test_a_run_folder_base_too_long_is_one_line(work):
    result = cli("run", work / "tiny.json", "--out", work / "m.cnnkit", "--quiet", env={"CNNKIT_RUN_DIR": str(work / ("r" * 300))})
    one_line_error(result, "cannot create a run folder in", "File name too long")


# -- finding 22: messages and save(force=) ----------------------------------------------------------


def test_run_without_arguments_asks_for_a_spec_and_does_not_say_not_both():
    line = one_line_error(cli("run"), "give a spec to train", "--resume RUN_FOLDER", code=2)
    assert "not both" not in line


def test_run_with_a_spec_and_resume_says_not_both(work):
    one_line_error(cli("run", work / "tiny.json", "--resume", work), "not both", code=2)


def test_a_stray_test_label_is_named_as_a_label_not_as_a_class_count(tmp_path):
    x, y = np.zeros((32, 28, 28), np.uint8), np.arange(32) % 10
    y_test = y[:8].copy()
    y_test[0] = 12  # class names are made up from the labels: "0".."12"
    np.savez(tmp_path / "stray.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y_test)
    (tmp_path / "s.json").write_text(json.dumps({**TINY_SPEC, "data": {"dataset": "npz", "path": str(tmp_path / "stray.npz")}}))
    line = one_line_error(cli("run", tmp_path / "s.json", "--out", tmp_path / "m.cnnkit"),
                          "test labels range over 1..12, but the model has 10 outputs (classes 0..9)")
    assert "13 classes" not in line


def test_save_takes_force_as_documented(tmp_path, tiny_spec):
    model = cnnkit.build(tiny_spec)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(cnnkit.BundleError, match="force=True"):
        model.save(tmp_path / "notes.txt")
    assert model.save(tmp_path / "notes.txt", force=True) == tmp_path / "notes.txt"
    (tmp_path / "other.txt").write_text("mine too")
    assert cnnkit.save(model, tmp_path / "other.txt", force=True) == tmp_path / "other.txt"
    assert cnnkit.load(tmp_path / "other.txt").spec.name == "tiny"


# -- finding 22: under torchrun, a bad setting once; --nproc-per-node checks before any process starts --


def _torch_env():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cnnkit(*args, env, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.torch
def test_under_torchrun_a_bad_setting_is_said_once_not_once_per_process(work):
    pytest.importorskip("torch")
    env = {**_torch_env(), "CNNKIT_NUM_THREADS": "abc"}
    result = _cnnkit("torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnkit", "run", "tiny.json",
                     "--backend", "torch", "--out", "m.cnnkit", env=env, cwd=work)
    assert result.returncode != 0
    assert result.stderr.count("CNNKIT_NUM_THREADS must be a positive integer") == 1, result.stderr


@pytest.mark.torch
@pytest.mark.parametrize(("env_extra", "args", "fragment"), [
    ({"CNNKIT_NUM_THREADS": "abc"}, (), "CNNKIT_NUM_THREADS must be a positive integer"),
    ({}, ("--set", "train.epochs=0"), "train.epochs"),
    ({}, ("--set", "data.dir=/nonexistent"), "data directory not found: /nonexistent"),
    ({}, ("--device", "cuda"), "--device cuda: no CUDA device is available here"),
])
def test_nproc_per_node_checks_once_before_any_process_starts(work, env_extra, args, fragment):
    pytest.importorskip("torch")
    result = _cnnkit("cnnkit", "run", "tiny.json", "--backend", "torch", "--nproc-per-node", "2", "--out", "m.cnnkit", *args,
                     env={**_torch_env(), **env_extra}, cwd=work)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "training" not in result.stdout and not (work / "m.cnnkit").exists()


def test_nproc_per_node_needs_the_torch_backend(work):
    one_line_error(cli("run", work / "tiny.json", "--nproc-per-node", "2"), "--nproc-per-node needs --backend torch", code=2)


@pytest.mark.torch
@pytest.mark.slow
def test_nproc_per_node_trains_in_two_processes_and_a_failure_in_them_is_two_lines(work):
    pytest.importorskip("torch")
    result = _cnnkit("cnnkit", "run", "tiny.json", "--backend", "torch", "--nproc-per-node", "2", "--out", "m.cnnkit", "--quiet",
                     env=_torch_env(), cwd=work)
    assert result.returncode == 0, result.stderr
    assert cnnkit.load(work / "m.cnnkit").metadata["backend"]["processes"] == 2
    # The global batch smaller than the process count is found in the processes: each says nothing more
    # than the first one's line, and the launcher one line, no traceback.
    result = _cnnkit("cnnkit", "run", "tiny.json", "--backend", "torch", "--nproc-per-node", "2", "--out", "n.cnnkit", "--quiet",
                     "--set", "train.batch_size=1", env=_torch_env(), cwd=work)
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert lines[0] == "error: train.batch_size 1 is the global batch: it must be at least the number of processes (2)", result.stderr
    assert lines[1].startswith("error: 2 of 2 training processes failed") and "Traceback" not in result.stderr
