"""cnnkit.training.session.train_session: the library side of `cnnkit run`, called without the CLI."""

from __future__ import annotations

import json
import re

import pytest

import cnnkit
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError
from cnnkit.training.session import train_session
from cnnkit.training.steppers import check_backend


def test_a_session_writes_what_the_command_writes_and_speaks_only_through_its_callbacks(spec_file, tmp_path, capsys):
    said, warned = [], []
    result = train_session(spec_file, [], out=str(tmp_path / "lib.cnnkit"), run_dir=tmp_path / "runs", say=said.append, warn=warned.append)
    assert capsys.readouterr().out == ""
    assert result.target == tmp_path / "lib.cnnkit" and result.folder == tmp_path / "runs" / "tiny"
    assert (result.folder / "last.cnnkit").is_file() and result.checkpoint_bytes > 0
    assert said[0].startswith("training tiny on ") and said[0].endswith(f"run folder {result.folder}")
    assert warned == []
    command = CliRunner().invoke(app, ["run", str(spec_file), "-q", "--out", str(tmp_path / "cli.cnnkit"), "--run-dir", str(tmp_path / "runs")])
    assert command.exit_code == 0, command.output
    assert (tmp_path / "cli.cnnkit").read_bytes() == result.target.read_bytes()
    # resuming the finished run writes the same bundle again
    again = train_session(None, resume=result.folder, out=str(tmp_path / "again.cnnkit"), say=said.append, warn=warned.append)
    assert again.folder == result.folder and again.target.read_bytes() == result.target.read_bytes()
    assert any(s.startswith("training tiny") and f"{result.folder} finished all its epochs; writing its bundle" in s for s in said)


@pytest.mark.parametrize("backend, device, message", [
    ("jax", "cpu", "--backend must be numpy or torch. Received: 'jax'"),
    ("numpy", "cuda", "--device cuda needs --backend torch"),
])
def test_bad_backend_options_are_one_clear_error(backend, device, message):
    with pytest.raises(CnnkitError, match=re.escape(message)):
        check_backend(backend, device)


def test_images_the_input_shape_cannot_take_fail_before_a_run_folder_exists(tmp_path):
    # A flat [784] input validates, but Fashion-MNIST's (28, 28) images do not fit it: the dataset check
    # says so before a run folder is made (a review found the run failing in the loop, before the data merge).
    spec = {"name": "flat", "input": {"shape": [784]}, "layers": [{"type": "dense", "units": 10}, {"type": "softmax"}],
            "data": {"train_limit": 50, "test_limit": 10}, "train": {"epochs": 1}}
    (tmp_path / "flat.json").write_text(json.dumps(spec))
    with pytest.raises(cnnkit.DataError, match=r"train images are \[28, 28\] each, but the spec.s input.shape is \[784\]"):
        train_session(tmp_path / "flat.json", [], out=str(tmp_path / "flat.cnnkit"), run_dir=tmp_path / "runs", say=lambda m: None, warn=lambda m: None)
    assert not (tmp_path / "runs").exists()
