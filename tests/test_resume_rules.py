"""What a resume may change and what it refuses, in one line each (issue 23, findings 4, 5, 8, 10)."""

from __future__ import annotations

import json
import shutil

import pytest

from cnnkit.data import load_fashion_mnist
from cnnkit.errors import CnnkitError
from cnnkit.training.loop import Interrupted
from cnnkit.training.resume import resume_run
from cnnkit.training.runfolder import LAST, SPEC_FILE, train_in_folder
from test_runs import run_in_folder, sgd_spec


@pytest.fixture
def stopped(synthetic_dir, tmp_path):
    """A run folder stopped 5 steps into epoch 2 (15 steps of 16 per epoch), and its data."""
    spec, data = sgd_spec(synthetic_dir), load_fashion_mnist(synthetic_dir)
    with pytest.raises(Interrupted):
        run_in_folder(spec, data, tmp_path / "runs", stop_at=20)
    return tmp_path / "runs" / "tiny", data


def test_another_batch_size_mid_epoch_trains_the_rest_of_the_epoch(stopped):
    """Batch 64 from step 5 of batch 16: the epoch goes on from example 80 (it skipped to example 320,
    past the end of a 240-example epoch, and trained nothing more of it)."""
    folder, data = stopped
    model, state = resume_run(folder, ["train.batch_size=64"])
    assert (state.epoch, state.step, state.examples) == (2, 5, 80)
    seen = []
    train_in_folder(model, data, folder, state=state, on_step=lambda epoch, done, total, loss: seen.append((epoch, done)))
    assert [done for epoch, done in seen if epoch == 2] == [144, 208, 240]
    assert [done for epoch, done in seen if epoch == 3] == [64, 128, 192, 240]
    history = model.metadata["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_another_seed_is_refused_because_the_run_drew_everything_from_its_own(stopped):
    folder, _ = stopped
    with pytest.raises(CnnkitError, match=r"cannot resume .* with train\.seed=5: the run's seed 0 drew its weights, validation split and order; "
                                          r"to train with seed 5, start a new run: cnnkit run .*spec\.json --set train\.seed=5"):
        resume_run(folder, ["train.seed=5"])
    assert json.loads((folder / SPEC_FILE).read_text())["train"]["seed"] == 0


def test_shuffle_changes_only_at_an_epoch_start(stopped):
    folder, _ = stopped
    with pytest.raises(CnnkitError, match=r"train\.shuffle=false in the middle of epoch 2: the epoch goes on in the order it began with"):
        resume_run(folder, ["train.shuffle=false"])


def test_a_folder_killed_before_its_first_checkpoint_says_what_happened(tmp_path):
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text("{}")  # all that start_run had written when the process was killed
    with pytest.raises(CnnkitError) as caught:
        resume_run(folder)
    assert str(caught.value) == (f"cannot resume {folder}: it holds no checkpoint, so the run ended before its first epoch was done (killed?); "
                                 f"start it again with: cnnkit run {folder / SPEC_FILE} (then remove {folder})")


def test_a_checkpoint_of_another_spec_is_refused(stopped, synthetic_dir, tmp_path):
    folder, data = stopped
    other = sgd_spec(synthetic_dir)
    other["name"] = "other"
    with pytest.raises(Interrupted):
        run_in_folder(other, data, tmp_path / "elsewhere", stop_at=3)
    shutil.copy(tmp_path / "elsewhere" / "other" / LAST, folder / LAST)
    with pytest.raises(CnnkitError, match=rf"cannot resume {folder}: its last\.cnnkit is a checkpoint of 'other', not of 'tiny' as its spec\.json says"):
        resume_run(folder)
    other["name"] = "tiny"
    other["layers"][0]["filters"] = 2
    with pytest.raises(Interrupted):
        run_in_folder(other, data, tmp_path / "third", stop_at=3)
    shutil.copy(tmp_path / "third" / "tiny" / LAST, folder / LAST)
    with pytest.raises(CnnkitError, match=r"its last\.cnnkit is a checkpoint of another spec \(layers differ\)"):
        resume_run(folder)


def test_spec_json_follows_the_checkpoint_when_only_training_settings_differ(stopped):
    """A resume with --set rewrites spec.json before its first checkpoint; killed then, the checkpoint still holds the old settings."""
    folder, _ = stopped
    recorded = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**recorded, "train": {**recorded["train"], "epochs": 7}}))
    model, _ = resume_run(folder)
    assert model.spec.train.epochs == 3 and json.loads((folder / SPEC_FILE).read_text()) == recorded
    (folder / SPEC_FILE).unlink()  # gone: the checkpoint holds the spec, so it is written again
    resume_run(folder)
    assert json.loads((folder / SPEC_FILE).read_text()) == recorded
