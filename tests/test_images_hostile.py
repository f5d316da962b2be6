"""Images are read the way the model saw its data, or refused in one line (issue 10: "Images read wrongly"),
and the smaller findings about evaluate and labels."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.data import load_fashion_mnist, read_images
from cnnkit.data.fashion_mnist import FILES
from cnnkit.errors import DataError
from conftest import TINY_SPEC, synthetic_images, write_dataset, write_idx

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, synthetic_dir):
    folder = tmp_path_factory.mktemp("images-bundle")
    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)}, train=dict(TINY_SPEC["train"], epochs=1))
    (folder / "tiny.json").write_text(json.dumps(spec))
    result = cli("run", folder / "tiny.json", "--out", folder / "tiny.cnnkit", "--quiet", "--run-dir", folder / "runs")  # module scope: before the autouse CNNKIT_RUN_DIR
    assert result.exit_code == 0, result.output
    return folder / "tiny.cnnkit"


def test_16_bit_png_is_rescaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    array = read_images(tmp_path / "deep.png", size=(28, 28))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert array.shape == (1, 28, 28) and array.dtype == np.uint8
    assert np.abs(array[0].astype(int) - expected).max() <= 1
    assert (array == 255).mean() < 0.01  # clipping would make most pixels 255


def test_transparent_pixels_become_the_models_background(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the square is opaque
    rgba[10:18, 10:18, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    array = read_images(tmp_path / "cutout.png", size=(28, 28))[0]
    assert array[0, 0] == 0 and array[12, 12] == 255  # black background, like Fashion-MNIST
    assert read_images(tmp_path / "cutout.png", size=(28, 28), background=40)[0][0, 0] == 40
    # A dark garment on a transparent ground, inverted: the ground still ends up as the background.
    rgba[..., :3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "dark.png")
    inverted = read_images(tmp_path / "dark.png", size=(28, 28), invert=True)[0]
    assert inverted[0, 0] == 0 and inverted[12, 12] == 255
    half = np.full((28, 28, 2), 255, np.uint8)
    half[..., 1] = 128  # LA: white at half opacity over black
    Image.fromarray(half, "LA").save(tmp_path / "half.png")
    assert abs(int(read_images(tmp_path / "half.png")[0][5, 5]) - 128) <= 1


def test_animated_image_needs_a_frame(tmp_path, bundle):
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(DataError, match="animated image with 2 frames; choose one with --frame"):
        read_images(tmp_path / "anim.gif")
    assert abs(int(read_images(tmp_path / "anim.gif", frame=1)[0].mean()) - 200) <= 2
    with pytest.raises(DataError, match="--frame must be 0..1. Received: 2"):
        read_images(tmp_path / "anim.gif", frame=2)
    result = cli("predict", bundle, tmp_path / "anim.gif")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "--frame" in result.stderr
    assert cli("predict", bundle, tmp_path / "anim.gif", "--frame", "0").exit_code == 0


def test_complex_npy_is_refused(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((1, 28, 28), np.complex64))
    with pytest.raises(DataError, match="real numbers.*complex64"):
        read_images(tmp_path / "z.npy")


def test_decompression_bomb_warning_is_one_clean_line(tmp_path, bundle, monkeypatch):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 784 pixels: over the warning limit, under the error one
    result = cli("predict", bundle, tmp_path / "big.png")
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {tmp_path / 'big.png'}: a very large image"), result.stderr
    assert "site-packages" not in result.stderr and "big.png:" in result.stdout


def test_fifo_is_named_as_such(tmp_path, bundle):
    os.mkfifo(tmp_path / "pipe.png")
    result = cli("predict", bundle, tmp_path / "pipe.png")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'pipe.png'} is a FIFO (named pipe), not an image file (PNG, JPEG, .npy or IDX)"


# -- smaller findings ------------------------------------------------------------------------------


def test_evaluate_needs_only_the_test_files(tmp_path, bundle):
    folder = write_dataset(tmp_path / "full")
    for key in ("train_images", "train_labels"):
        for p in folder.glob(FILES[key][0] + "*"):
            p.unlink()
    result = cli("evaluate", bundle, "--data-dir", folder, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["examples"] == 100
    data = load_fashion_mnist(folder, splits=("test",))
    assert len(data.train_labels) == 0 and data.train_images.shape == (0, 28, 28) and len(data.test_labels) == 100


def test_out_of_range_labels_name_the_file(tmp_path):
    folder = write_dataset(tmp_path / "bad")
    images, labels = synthetic_images(240, 1)
    labels[5] = 12
    write_idx(folder / (FILES["train_labels"][0] + ".gz"), labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: labels range over 0..12, but Fashion-MNIST has 10 classes"):
        load_fashion_mnist(folder)
