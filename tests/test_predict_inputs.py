"""What predict takes, and data that looks wrong (issue 23, findings 15-17).

Channels-last arrays (what ``np.asarray`` of a Pillow image gives) are accepted when unambiguous;
several files with one bad name the bad one and still print the others; a pixel range that does
not match the preprocessing is a warning (and no warning fires on correct data); float and 32-bit
pictures are scaled or refused, never silently clipped; an empty .npy is an error.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit import DataWarning
from cnnkit.cli import app
from cnnkit.data import read_images
from cnnkit.errors import DataError
from conftest import TINY_SPEC, synthetic_images

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir):
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["dir"] = str(synthetic_dir)
    spec["train"]["epochs"] = 1
    model = cnnkit.train(spec)
    return model, model.save(tmp_path_factory.mktemp("predict-inputs") / "tiny.cnnkit")


@pytest.fixture
def no_data_warnings():
    """Any DataWarning inside the block fails the test: the warnings must not fire on correct data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        yield


# -- finding 15: channels last, and one bad file among several ---------------------------------------


def test_channels_last_grayscale_predicts_like_channels_first(trained):
    model, _ = trained
    images, _ = synthetic_images(20, 3)
    expected = model.predict_proba(images[:, None])  # (N, 1, 28, 28)
    np.testing.assert_array_equal(model.predict_proba(images[..., None]), expected)  # (N, 28, 28, 1)
    np.testing.assert_array_equal(model.predict_proba(images[4][..., None]), model.predict_proba(images[4][None]))  # one (28, 28, 1) image


def test_channels_last_colour_image_from_pillow_is_accepted():
    spec = {**TINY_SPEC, "input": {"shape": [3, 16, 12]}}
    model = cnnkit.build(spec)
    rgb = np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(rgb, "RGB"))  # (H, W, C), as every Pillow user has it
    expected = model.predict_proba(rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(model.predict_proba(picture), expected)
    np.testing.assert_array_equal(model.predict_proba(np.stack([picture, picture])), np.concatenate([expected, expected]))


def test_an_array_that_fits_both_layouts_is_read_channels_first():
    model = cnnkit.build({"input": {"shape": [3, 3, 3]}, "layers": [{"type": "flatten"}, {"type": "dense", "units": 2}]})
    x = np.arange(2 * 27, dtype=np.float32).reshape(2, 3, 3, 3)
    np.testing.assert_array_equal(model.preprocess(x, preprocessed=True), x)


def test_a_shape_that_fits_no_layout_names_them_all(trained):
    model, _ = trained
    with pytest.raises(DataError) as caught:
        model.predict(np.zeros((2, 28, 28, 2), np.uint8))
    assert str(caught.value) == ("images must have shape (N, 1, 28, 28), (N, 28, 28) or channels last (N, 28, 28, 1) for "
                                 "input.shape [1, 28, 28], or be one such image without N. Received: [2, 28, 28, 2]")


def test_cli_predict_takes_a_channels_last_npy(trained, tmp_path):
    model, path = trained
    images, _ = synthetic_images(3, 4)
    np.save(tmp_path / "hwc.npy", images[..., None])
    result = cli("predict", path, tmp_path / "hwc.npy", "--json")
    assert result.exit_code == 0, result.output
    found = [r["top"][0]["index"] for r in json.loads(result.stdout)]
    assert found == model.predict(images).tolist()


def test_one_bad_file_among_several_is_named_and_the_good_ones_still_print(trained, tmp_path):
    _, path = trained
    images, _ = synthetic_images(2, 5)
    np.save(tmp_path / "good.npy", images)
    np.save(tmp_path / "bad.npy", np.zeros((2, 27, 28), np.uint8))
    Image.fromarray(images[0]).save(tmp_path / "good.png")
    result = cli("predict", path, tmp_path / "good.npy", tmp_path / "bad.npy", tmp_path / "good.png")
    assert result.exit_code == 1
    printed = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in printed] == [f"{tmp_path / 'good.npy'}[0]", f"{tmp_path / 'good.npy'}[1]", str(tmp_path / "good.png")]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'bad.npy'}: images must have shape"), result.stderr
    assert "Received: [2, 27, 28]" in errors[0]
    as_json = cli("predict", path, tmp_path / "bad.npy", tmp_path / "good.png", "--json")
    assert as_json.exit_code == 1 and [r["input"] for r in json.loads(as_json.stdout)] == [str(tmp_path / "good.png")]


# -- finding 16: a pixel range that does not match the preprocessing ---------------------------------


def digits_like(tmp_path, scale: float, dtype, divide: float | None = None) -> dict:
    """A spec on an npz whose pixels go up to ``scale`` (sklearn's digits: 16)."""
    images, labels = synthetic_images(64, 6)
    x = (images.astype(np.float64) * (scale / images.max())).astype(dtype)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=labels, x_test=x[:16], y_test=labels[:16])
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"] = {"dataset": "npz", "path": str(tmp_path / "d.npz")}
    spec["train"]["epochs"] = 1
    if divide is not None:
        spec["input"]["preprocess"] = {"divide": divide, "subtract": 0.0}
    return spec


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
@pytest.mark.parametrize(("scale", "dtype", "top"), [(16, np.uint8, "16"), (1.0, np.float32, "1"), (65535, np.uint16, "65535")])
def test_training_warns_when_the_data_is_on_another_scale_than_divide(tmp_path, scale, dtype, top):
    with pytest.warns(DataWarning, match=rf"the training images go up to {top}, but input.preprocess divides by 255"):
        cnnkit.train(digits_like(tmp_path, scale, dtype))


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
@pytest.mark.parametrize(("scale", "dtype", "divide"), [(255, np.uint8, None), (1.0, np.float32, 1.0), (16, np.uint8, 16.0), (255, np.float64, None)])
def test_training_on_data_that_matches_divide_does_not_warn(tmp_path, no_data_warnings, scale, dtype, divide):
    cnnkit.train(digits_like(tmp_path, scale, dtype, divide))


def test_the_run_command_prints_the_range_warning_before_training(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(digits_like(tmp_path, 16, np.uint8)))
    result = cli("run", tmp_path / "d.json", "--out", tmp_path / "d.cnnkit", "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: the training images go up to 16, but input.preprocess divides by 255" in result.stderr
    assert "set input.preprocess.divide to 16" in result.stderr


def test_predict_warns_about_floats_already_scaled_to_one(trained):
    model, _ = trained
    images, _ = synthetic_images(4, 7)
    with pytest.warns(DataWarning, match=r"images are floats up to 0.8627, but the model divides raw pixel values by 255"):
        model.predict(images / np.float32(255))


def test_predict_on_correct_input_does_not_warn(trained, no_data_warnings):
    model, _ = trained
    images, _ = synthetic_images(4, 7)
    model.predict(images)  # uint8
    model.predict(images.astype(np.float32))  # raw values as floats
    model.predict(images / np.float32(255) - np.float32(0.5), preprocessed=True)  # model units
    model.predict(np.zeros((1, 28, 28), np.float32))  # a black image is the same on any scale
    ones = cnnkit.build({**TINY_SPEC, "input": {"shape": [1, 28, 28], "preprocess": {"divide": 1.0, "subtract": 0.0}}})
    ones.predict(images / np.float32(255))  # a model trained on 0..1 floats


def test_cli_predict_names_the_file_whose_floats_look_scaled(trained, tmp_path):
    _, path = trained
    images, _ = synthetic_images(2, 8)
    np.save(tmp_path / "scaled.npy", images / np.float32(255))
    np.save(tmp_path / "raw.npy", images)
    result = cli("predict", path, tmp_path / "scaled.npy", tmp_path / "raw.npy")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        f"warning: {tmp_path / 'scaled.npy'}: the images are floats up to 0.8627, but the model divides raw pixel values by 255 "
        f"(input.preprocess): pass pixel values on the training data's scale (e.g. x * 255), or preprocessed=True for arrays already in model units"]


# -- finding 17: float and 32-bit pictures, empty arrays, animated images -----------------------------


def test_float_tiff_in_zero_to_one_is_scaled_not_blackened(tmp_path):
    Image.fromarray(np.full((28, 28), 0.8, np.float32)).save(tmp_path / "f.tiff")
    assert int(read_images(tmp_path / "f.tiff")[0].mean()) == 204
    Image.fromarray(np.full((28, 28), 100.0, np.float32)).save(tmp_path / "g.tiff")
    assert int(read_images(tmp_path / "g.tiff")[0].mean()) == 100  # a float on the 0..255 scale is kept


@pytest.mark.parametrize("value", [-1.0, 300.0, np.nan])
def test_float_tiff_off_every_scale_is_refused(tmp_path, value):
    Image.fromarray(np.full((28, 28), value, np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match=r"f.tiff: a floating-point image (with values|holding NaN)"):
        read_images(tmp_path / "f.tiff")


def test_int32_tiff_beyond_16_bits_is_refused_not_clipped(tmp_path):
    Image.fromarray(np.full((28, 28), 70_000, np.int32)).save(tmp_path / "i.tiff")
    with pytest.raises(DataError, match=r"i.tiff: a 32-bit integer image with values 70,000..70,000, beyond 16 bits"):
        read_images(tmp_path / "i.tiff")
    Image.fromarray(np.full((28, 28), 30_000, np.int32)).save(tmp_path / "j.tiff")
    assert int(read_images(tmp_path / "j.tiff")[0].mean()) == 117  # 16-bit scale: 30000 * 255 / 65535


def test_cli_float_tiff_says_what_was_done(trained, tmp_path):
    _, path = trained
    Image.fromarray(np.full((28, 28), 0.8, np.float32)).save(tmp_path / "f.tiff")
    result = cli("predict", path, tmp_path / "f.tiff", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["converted"] == "F 28x28 -> grayscale, values 0..1 scaled to 0..255"


def test_an_npy_of_no_images_is_an_error(trained, tmp_path):
    _, path = trained
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    result = cli("predict", path, tmp_path / "empty.npy")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path / 'empty.npy'}: holds no images (shape [0, 28, 28])"


def test_animated_image_message_is_said_once(trained, tmp_path):
    _, path = trained
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = cli("predict", path, tmp_path / "anim.gif")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'anim.gif'} is an animated image with 2 frames; choose one with --frame N (0..1)"
