"""specs/examples/: the specs docs/data.md offers for your own data, each trained as a reader would run it.

Each test lays out small real data the way the example expects it (scikit-learn's handwritten
digits as a folder of grayscale PNGs or as an .npz; crops of its two sample photographs as a folder
of RGB JPEGs), trains the example with `cnnkit run SPEC --set data.path=...` and predicts with the
bundle. Only the data path and the number of epochs are overridden: the layers, the source and its
settings are the file's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app

sklearn_datasets = pytest.importorskip("sklearn.datasets")

EXAMPLES = Path(__file__).resolve().parent.parent / "specs" / "examples"
runner = CliRunner()


def train(example: str, data_path: Path, tmp_path: Path, epochs: int) -> cnnkit.Model:
    out = tmp_path / f"{example}.cnnkit"
    result = runner.invoke(app, ["run", str(EXAMPLES / f"{example}.json"), "--set", f"data.path={json.dumps(str(data_path))}",
                                 "--set", f"train.epochs={epochs}", "--out", str(out), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    return cnnkit.load(out)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 handwritten digits, uint8 (N, 8, 8) with 0-255 gray levels, and their labels."""
    bunch = sklearn_datasets.load_digits()
    return (bunch.images * (255 / 16)).round().astype(np.uint8), bunch.target.astype(np.int64)


@pytest.mark.slow
def test_image_folder_example_trains_on_a_folder_of_gray_pictures(tmp_path):
    images, labels = digits()
    folder = tmp_path / "pictures"
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / str(label) / f"{i:04d}.png")  # 8x8: the source resizes to 28x28
    model = train("image_folder", folder, tmp_path, epochs=3)
    assert model.classes == [str(k) for k in range(10)]
    assert model.metadata["metrics"]["test_accuracy"] > 0.8  # measured: 0.93 after 3 epochs (chance: 0.1)
    result = runner.invoke(app, ["predict", str(tmp_path / "image_folder.cnnkit"), str(folder / "7" / "0007.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["top"][0]["class"] == "7"


@pytest.mark.slow
def test_npz_example_trains_on_arrays(tmp_path):
    images, labels = digits()
    big = np.pad(np.kron(images, np.ones((3, 3), np.uint8)), ((0, 0), (2, 2), (2, 2)))  # (N, 28, 28), as the spec's input
    path = tmp_path / "data.npz"
    np.savez(path, x_train=big[:1500], y_train=labels[:1500], x_test=big[1500:], y_test=labels[1500:],
             classes=np.array([f"digit {k}" for k in range(10)]))
    model = train("npz", path, tmp_path, epochs=3)
    assert model.classes[7] == "digit 7"
    assert model.metadata["metrics"]["test_accuracy"] > 0.7  # measured: 0.87 on these later writers (chance: 0.1)
    assert (model.predict(big[1500:1600]) == labels[1500:1600]).mean() > 0.7


@pytest.mark.slow
def test_rgb_example_trains_on_colour_photos_and_predicts_a_whole_photo(tmp_path):
    photos = sklearn_datasets.load_sample_images()  # two (427, 640, 3) photographs: a temple in China, a flower
    rng = np.random.default_rng(0)
    for name, photo in zip(("china", "flower"), photos.images):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(60):
            top, left = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
            Image.fromarray(photo[top : top + 96, left : left + 96]).save(tmp_path / "photos" / name / f"{i:02d}.jpg")
    model = train("rgb_photos", tmp_path / "photos", tmp_path, epochs=6)
    assert model.input_shape == (3, 32, 32) and model.classes == ["china", "flower"]
    assert model.metadata["metrics"]["test_accuracy"] >= 0.8  # measured: 1.0 (chance: 0.5)
    whole = tmp_path / "flower.png"
    Image.fromarray(photos.images[1]).save(whole)
    result = runner.invoke(app, ["predict", str(tmp_path / "rgb_photos.cnnkit"), str(whole), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)[0]
    assert answer["converted"] == "RGB 640x427 -> resized to 32x32", answer
