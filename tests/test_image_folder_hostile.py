"""image-folder with hostile contents (issue 23, finding 18): a huge picture is one clean warning naming
it; a dangling symlink or a FIFO with a picture's name is an error naming it, not skipped; a damaged
cache is rebuilt, not trained on; a class folder named in invalid UTF-8 is one line. FIFOs are made
with os.mkfifo in the test's own temp folder."""

from __future__ import annotations

import copy
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit import DataWarning
from cnnkit.cli import app
from cnnkit.data import load_dataset
from cnnkit.data.arrays import cache_root
from cnnkit.errors import DataError
from cnnkit.spec import validate_spec
from conftest import TINY_SPEC

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_folder(root, per_class=4, classes=("a", "b")):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((28, 28), 30 * i + 100 * k, np.uint8)).save(root / name / f"{i}.png")
    return root


def spec_for(root, **data) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"] = {"dataset": "image-folder", "path": str(root), **data}
    spec["layers"][-2]["units"] = 2
    spec["train"]["epochs"] = 1
    return spec


def load(root, **data):
    return load_dataset(validate_spec(spec_for(root, **data)).data, (1, 28, 28))


def test_a_huge_picture_is_one_warning_naming_it(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "photos")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the warning limit, under the error one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(root)
    messages = [str(w.message) for w in caught]
    assert messages == [f"image-folder: {root / 'a' / 'big.png'}: a very large image (Image size (1600 pixels) exceeds limit of "
                        f"1000 pixels, could be decompression bomb DOS attack.); reading it anyway"], messages
    assert caught[0].category is DataWarning


def test_the_cli_prints_the_huge_picture_warning_as_one_line(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "photos")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "b" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "s.json").write_text(json.dumps(spec_for(root)))
    result = cli("run", tmp_path / "s.json", "--out", tmp_path / "m.cnnkit", "--quiet")
    assert result.exit_code == 0, result.output
    assert "Image.py" not in result.stderr and "warnings.warn" not in result.stderr
    big = [line for line in result.stderr.splitlines() if "big.png" in line]
    assert len(big) == 1 and big[0].startswith(f"warning: image-folder: {root / 'b' / 'big.png'}: a very large image"), result.stderr


def test_a_dangling_symlink_with_a_pictures_name_is_named(tmp_path):
    root = make_folder(tmp_path / "photos")
    os.symlink(tmp_path / "gone.png", root / "a" / "link.png")
    with pytest.raises(DataError, match=rf"image-folder: {root / 'a' / 'link.png'} is a dangling symlink \(to .*gone.png\), not a picture"):
        load(root)


def test_a_fifo_with_a_pictures_name_is_named_and_never_opened(tmp_path):
    root = make_folder(tmp_path / "photos")
    os.mkfifo(root / "b" / "pipe.png")
    with pytest.raises(DataError, match=rf"image-folder: {root / 'b' / 'pipe.png'} is a FIFO \(named pipe\), not a picture"):
        load(root)


def test_other_files_and_a_symlink_to_a_picture_are_fine(tmp_path):
    root = make_folder(tmp_path / "photos")
    (root / "a" / "notes.txt").write_text("not a picture, not named like one")
    os.symlink(root / "a" / "0.png", root / "b" / "linked.png")
    data = load(root)
    assert len(data.train_labels) + len(data.test_labels) == 9


def test_a_damaged_cache_is_rebuilt_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "photos")
    first = load(root)
    expected = np.concatenate([first.train_images, first.test_images])  # a copy: the cache is memory-mapped
    (cache,) = (cache_root() / "image-folder").glob("*.npz")
    damaged = bytearray(cache.read_bytes())
    at = damaged.index(b"x_train.npy") + 200  # inside the training images' bytes
    damaged[at] ^= 0xFF
    cache.write_bytes(bytes(damaged))
    again = load(root)
    np.testing.assert_array_equal(np.concatenate([np.asarray(again.train_images), np.asarray(again.test_images)]), expected)
    assert cache.read_bytes() != bytes(damaged)  # rewritten


def test_a_class_folder_named_in_invalid_utf8_is_one_line(tmp_path):
    root = make_folder(tmp_path / "photos")
    odd = os.path.join(os.fsencode(root), b"c\xff")
    os.mkdir(odd)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.fsdecode(os.path.join(odd, b"0.png")))
    with pytest.raises(DataError, match=r"image-folder: class folder b'c\\xff' in .*photos is not named in UTF-8"):
        load(root)
    spec = spec_for(root)
    spec["layers"][-2]["units"] = 3
    (tmp_path / "s.json").write_text(json.dumps(spec))
    result = cli("run", tmp_path / "s.json", "--out", tmp_path / "m.cnnkit")
    assert result.exit_code == 1 and "internal error" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
