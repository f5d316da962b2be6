"""Augmentation: each operation's semantics and statistics, determinism, and its place in training."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import cnnkit
from cnnkit import SpecError
from cnnkit.data import Dataset
from cnnkit.spec.training import AugmentSpec, RandomErasing
from cnnkit.training import augment as aug
from cnnkit.training.augment import Augmenter, batch_rng, horizontal_flip, random_crop, random_erasing
from conftest import TINY_SPEC, synthetic_images

pytestmark = pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # flips scramble the synthetic classes


def batch(n=64, c=2, h=9, w=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def tiny_data(train=240, test=100) -> Dataset:
    x, y = synthetic_images(train, 1)
    xt, yt = synthetic_images(test, 2)
    return Dataset(x, y.astype(np.int64), xt, yt.astype(np.int64), [f"c{i}" for i in range(10)], "synthetic")


def spec_with(augment, **train) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["augment"] = augment
    spec["train"].update(train)
    return spec


# -- the operations --------------------------------------------------------------------------------


def test_crop_equals_a_shift_of_the_padded_image():
    x, p, fill = batch(), 3, -0.5
    out = random_crop(x, p, fill, np.random.default_rng(1))
    replay = np.random.default_rng(1)
    top, left = replay.integers(0, 2 * p + 1, len(x)), replay.integers(0, 2 * p + 1, len(x))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(len(x)):  # the oracle loops; the operation does not
        padded = np.pad(x[i], ((0, 0), (p, p), (p, p)), constant_values=fill)
        np.testing.assert_array_equal(out[i], padded[:, top[i] : top[i] + 9, left[i] : left[i] + 7])


def test_crop_offsets_cover_every_shift_evenly_and_the_input_is_untouched():
    x = np.ones((4000, 1, 5, 5), np.float32)
    before = x.copy()
    out = random_crop(x, 2, 0.0, np.random.default_rng(2))
    np.testing.assert_array_equal(x, before)
    # A shift of (dy, dx) leaves (5 - |dy|) * (5 - |dx|) pixels of the image: the count identifies the shift's size.
    kept = out.reshape(len(out), -1).sum(axis=1)
    sizes = {k: (5 - abs(dy)) * (5 - abs(dx)) for k, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3))}
    expected = np.bincount(list(sizes.values()), minlength=26)[:26] / 25  # share of the 25 shifts per kept-pixel count
    observed = np.bincount(kept.astype(int), minlength=26)[:26] / len(out)
    np.testing.assert_allclose(observed, expected, atol=0.02)
    assert out[:, 0, 2, 2].min() == 1  # the centre pixel always stays inside a crop with padding 2


def test_flip_mirrors_exactly_the_chosen_images():
    x = batch(n=2000)
    out = horizontal_flip(x, np.random.default_rng(3))
    chosen = np.random.default_rng(3).random(len(x)) < 0.5
    np.testing.assert_array_equal(out[chosen], x[chosen][..., ::-1])
    np.testing.assert_array_equal(out[~chosen], x[~chosen])
    assert 0.45 < chosen.mean() < 0.55


def test_erasing_writes_one_rectangle_of_the_drawn_size_in_every_channel():
    x = batch(n=500, c=3, h=8, w=8) + 10  # no value near the erasing value 0
    out = random_erasing(x, np.random.default_rng(4), p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0)
    erased = out == 0
    assert (erased == erased[:, :1]).all()  # all channels alike
    mask = erased[:, 0]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    assert (mask.sum(axis=(1, 2)) == 16).all()  # area 0.25 * 64 at ratio 1: a 4 x 4 square
    assert (rows.sum(axis=1) == 4).all() and (cols.sum(axis=1) == 4).all()  # a rectangle: 4 rows x 4 columns
    np.testing.assert_array_equal(out[~erased], x[~erased])
    # Corners are uniform over the 5 x 5 places a 4 x 4 square fits in.
    corners = rows.argmax(axis=1) * 5 + cols.argmax(axis=1)
    assert set(corners.tolist()) == set(range(25)) and np.bincount(corners).max() < 45


def test_erasing_probability_area_and_aspect_follow_the_parameters():
    x = batch(n=4000, c=1, h=32, w=32) + 10
    out = random_erasing(x, np.random.default_rng(5), p=0.3, scale=(0.02, 0.2), ratio=(0.5, 2.0), value=-1.0)
    mask = out[:, 0] == -1.0
    hit = mask.any(axis=(1, 2))
    assert 0.27 < hit.mean() < 0.33
    area = mask[hit].sum(axis=(1, 2)) / (32 * 32)
    heights, widths = mask[hit].any(axis=2).sum(axis=1), mask[hit].any(axis=1).sum(axis=1)
    assert area.min() > 0.01 and area.max() < 0.23  # within scale, give or take rounding
    assert (heights / widths).min() >= 0.4 and (heights / widths).max() <= 2.5
    assert abs(np.log(heights / widths).mean()) < 0.05  # log-uniform ratio: symmetric around 1


def test_erasing_that_cannot_fit_leaves_the_image_alone():
    x = batch(n=50, h=4, w=4)
    out = random_erasing(x, np.random.default_rng(6), p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_array_equal(out, x)  # a rectangle as large as the image never fits (torchvision's rule)


def test_same_seed_epoch_and_step_give_the_same_batch():
    spec = AugmentSpec(crop_padding=2, hflip=True, erasing=RandomErasing(p=0.5))
    augment, x = Augmenter(spec, -0.5, seed=7), batch()
    np.testing.assert_array_equal(augment(x, 1, 3), augment(x, 1, 3))
    assert not np.array_equal(augment(x, 1, 3), augment(x, 1, 4))
    assert not np.array_equal(augment(x, 1, 3), augment(x, 2, 3))
    assert not np.array_equal(augment(x, 1, 3), Augmenter(spec, -0.5, seed=8)(x, 1, 3))
    assert batch_rng(7, 1, 3).random() == batch_rng(7, 1, 3).random()


def test_nothing_enabled_is_the_identity():
    augment = Augmenter(AugmentSpec(), -0.5, seed=0)
    x = batch()
    assert not augment.active
    np.testing.assert_array_equal(augment(x, 1, 0), x)


# -- in training -----------------------------------------------------------------------------------


def test_training_with_augmentation_is_reproducible_and_differs_from_without(tmp_path):
    data = tiny_data()
    spec = spec_with({"crop_padding": 2, "hflip": True, "erasing": {"p": 0.5}}, epochs=2)
    a = cnnkit.train(spec, data).save(tmp_path / "a.cnnkit").read_bytes()
    b = cnnkit.train(spec, data).save(tmp_path / "b.cnnkit").read_bytes()
    plain = cnnkit.train(spec_with(None, epochs=2), data)
    assert a == b
    assert any(not np.array_equal(cnnkit.load(tmp_path / "a.cnnkit").weights[n], plain.weights[n]) for n in plain.weights)


def test_an_augment_block_with_everything_off_trains_like_none():
    data = tiny_data()
    off = cnnkit.train(spec_with({"crop_padding": 0, "hflip": False}, epochs=1), data)
    none = cnnkit.train(spec_with(None, epochs=1), data)
    for name in none.weights:
        np.testing.assert_array_equal(off.weights[name], none.weights[name])


def test_only_training_batches_are_augmented(monkeypatch):
    seen = []
    original = Augmenter.__call__

    def spy(self, x, epoch, step):
        seen.append((epoch, step, len(x)))
        return original(self, x, epoch, step)

    monkeypatch.setattr(aug.Augmenter, "__call__", spy)
    spec = spec_with({"hflip": True}, epochs=2, batch_size=100)
    spec["data"]["validation"] = 40
    cnnkit.train(spec, tiny_data(train=240, test=100))
    # 200 training examples after the 40 held out: steps of 100, 100 per epoch; validation and test never pass through.
    assert seen == [(1, 0, 100), (1, 1, 100), (2, 0, 100), (2, 1, 100)]


def test_crop_pads_with_black_in_model_units(monkeypatch):
    fills = []
    monkeypatch.setattr(aug, "random_crop", lambda x, p, fill, rng: fills.append(fill) or x)
    spec = spec_with({"crop_padding": 1}, epochs=1)
    spec["input"]["preprocess"] = {"divide": 255.0, "subtract": 0.25}
    cnnkit.train(spec, tiny_data(train=16, test=10))
    assert fills == [-0.25]


@pytest.mark.parametrize(
    ("augment", "shape", "path"),
    [
        ({"crop_padding": 28}, [1, 28, 28], "data.augment.crop_padding: must be smaller than the image (28x28)"),
        ({"crop_padding": 5}, [1, 5, 40], "data.augment.crop_padding"),
        ({"hflip": True}, [784], "data.augment: augmentation works on images"),
        ({"erasing": {"scale": [0.4, 0.1]}}, [1, 28, 28], "data.augment.erasing.scale"),
        ({"erasing": {"ratio": [0, 1]}}, [1, 28, 28], "data.augment.erasing.ratio"),
        ({"erasing": {"p": 1.5}}, [1, 28, 28], "data.augment.erasing.p"),
        ({"flip": True}, [1, 28, 28], "data.augment.flip: unknown field"),
        ({"erasing": {"value": float("inf")}}, [1, 28, 28], "data.augment.erasing.value: input should be a finite number"),
    ],
)
def test_bad_augmentation_is_a_spec_error_at_its_path(augment, shape, path):
    spec = spec_with(augment)
    spec["input"]["shape"] = shape
    if len(shape) == 1:
        spec["layers"] = [{"type": "dense", "units": 10}]
    with pytest.raises(SpecError, match=path.replace("(", r"\(").replace(")", r"\)")):
        cnnkit.build(spec)


def test_augmentation_that_cannot_change_a_batch_is_off_everywhere():
    """AugmentSpec.active is the one definition: the spec check and the training loop agree that
    erasing with p = 0 does nothing (the spec check used to reject it on a flat input)."""
    from cnnkit.training import loop

    flat = {"name": "flat", "input": {"shape": [4]}, "layers": [{"type": "dense", "units": 2}, {"type": "softmax"}],
            "data": {"augment": {"erasing": {"p": 0.0}}}}
    model = cnnkit.build(flat)
    assert not model.spec.data.augment.active and loop.augmenter(model) is None
    images = copy.deepcopy(TINY_SPEC)
    images["data"]["augment"] = {"hflip": True}
    assert isinstance(loop.augmenter(cnnkit.build(images)), Augmenter)
    with pytest.raises(SpecError, match="augmentation works on images"):
        cnnkit.build({**flat, "data": {"augment": {"erasing": {"p": 0.5}}}})
