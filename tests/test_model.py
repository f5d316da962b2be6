"""Model use from Python: build, predict / predict_proba on every accepted input form, bundle round trip."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import DataError
from conftest import TINY_SPEC, synthetic_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir):
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    spec["data"]["dir"] = str(synthetic_dir)
    model = cnnkit.train(spec)
    path = model.save(tmp_path_factory.mktemp("bundle") / "tiny.cnnkit")
    return model, path


def test_load_and_predict_every_input_form(trained):
    _, path = trained
    model = cnnkit.load(path)
    images, _ = synthetic_images(5, 7)  # uint8 (5, 28, 28)
    expected = model.predict(images)
    assert expected.shape == (5,) and expected.dtype.kind == "i"
    np.testing.assert_array_equal(model.predict(images[:, None]), expected)  # (N, 1, 28, 28)
    np.testing.assert_array_equal(model.predict(images.astype(np.float64)), expected)  # raw values as floats
    np.testing.assert_array_equal(model.predict(images.astype(np.float32)[:, None]), expected)
    assert model.predict(images[2]).tolist() == [expected[2]]  # a single (28, 28) image
    assert model.predict(images[2][None]).tolist() == [expected[2]]  # a single (1, 28, 28) image
    pre = images.astype(np.float32) / 255 - 0.5
    np.testing.assert_array_equal(model.predict(pre, preprocessed=True), expected)
    assert model.predict(images[:0]).shape == (0,)


def test_predict_proba_rows_sum_to_one_and_agree_with_predict(trained):
    model, _ = trained
    images, _ = synthetic_images(300, 8)
    proba = model.predict_proba(images, batch_size=128)  # more than one batch
    assert proba.shape == (300, 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(images))


def test_learned_the_synthetic_classes(trained):
    model, _ = trained
    images, labels = synthetic_images(200, 9)
    assert (model.predict(images) == labels).mean() > 0.9


def test_bundle_round_trip_gives_identical_predictions(trained, tmp_path):
    model, path = trained
    loaded = cnnkit.load(path)
    images, _ = synthetic_images(64, 10)
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    assert loaded.classes == model.classes and loaded.classes[9] == "Ankle boot"
    assert loaded.spec.to_dict() == model.spec.to_dict()
    assert set(loaded.weights) == set(model.weights)
    for name, w in model.weights.items():
        np.testing.assert_array_equal(loaded.weights[name], w)
    history = loaded.metadata["history"]
    assert len(history) == 3 and history[-1]["test_accuracy"] == model.metadata["metrics"]["test_accuracy"]
    again = loaded.save(tmp_path / "again.cnnkit")
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 28, 27), np.uint8),
        np.zeros((2, 3, 28, 28), np.uint8),
        np.zeros((28, 28, 2), np.uint8),  # (28, 28, 1) is one channels-last image
        np.zeros(784, np.uint8),
        np.zeros((), np.uint8),
        np.array([["a"] * 28] * 28),
        np.array([None] * 4, dtype=object),
        np.full((2, 28, 28), np.nan, np.float32),
        np.full((1, 1, 28, 28), np.inf),
    ],
)
def test_bad_shapes_and_dtypes_are_data_errors(trained, images):
    model, _ = trained
    with pytest.raises(DataError) as info:
        model.predict(images)
    assert "\n" not in str(info.value)


def test_build_from_dict_path_and_spec(tmp_path):
    import json

    path = tmp_path / "s.json"
    path.write_text(json.dumps(TINY_SPEC))
    a, b, c = cnnkit.build(TINY_SPEC), cnnkit.build(path), cnnkit.build(cnnkit.validate_spec(TINY_SPEC))
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name])
        np.testing.assert_array_equal(a.weights[name], c.weights[name])
    assert all(w.dtype == np.float32 for w in a.weights.values())
    with pytest.raises(cnnkit.SpecError):
        cnnkit.build({**TINY_SPEC, "layers": [{"type": "nope"}]})


def test_missing_bundle_is_a_bundle_error(tmp_path):
    with pytest.raises(cnnkit.BundleError, match="not found"):
        cnnkit.load(tmp_path / "missing.cnnkit")


def test_errors_form_one_hierarchy_of_value_errors():
    for cls in (cnnkit.SpecError, cnnkit.BundleError, cnnkit.DataError, cnnkit.RegistryError):
        assert issubclass(cls, cnnkit.CnnkitError) and issubclass(cls, ValueError)


def test_preprocessing_is_declared_stored_and_applied(tmp_path):
    import copy

    spec = copy.deepcopy(TINY_SPEC)
    spec["input"]["preprocess"] = {"divide": 1.0, "subtract": 0.0}
    model = cnnkit.build(spec)
    assert cnnkit.build(TINY_SPEC).spec.input.preprocess.model_dump() == {"divide": 255.0, "subtract": 0.5}  # the seed's default
    loaded = cnnkit.load(model.save(tmp_path / "raw.cnnkit"))
    assert loaded.spec.input.preprocess.model_dump() == {"divide": 1.0, "subtract": 0.0}
    images, _ = synthetic_images(8, 12)
    np.testing.assert_array_equal(loaded.predict_proba(images), loaded.predict_proba(images.astype(np.float32), preprocessed=True))
    seed_like = cnnkit.build(TINY_SPEC)
    np.testing.assert_array_equal(seed_like.predict_proba(images), seed_like.predict_proba(images / np.float32(255) - np.float32(0.5), preprocessed=True))


def test_wrong_image_shape_message_names_only_shapes_that_are_accepted():
    """A flat [784] input said 'must have shape (N, 784) or (N, )'."""
    flat = cnnkit.build({"input": {"shape": [784]}, "layers": [{"type": "dense", "units": 10}]})
    with pytest.raises(cnnkit.DataError) as caught:
        flat.predict(np.zeros((2, 28, 28), np.uint8))
    assert str(caught.value) == "images must have shape (N, 784) for input.shape [784], or be one such image without N. Received: [2, 28, 28]"
    image = cnnkit.build({"input": {"shape": [1, 28, 28]}, "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]})
    with pytest.raises(cnnkit.DataError, match=r"must have shape \(N, 1, 28, 28\), \(N, 28, 28\) or channels last \(N, 28, 28, 1\) "
                                               r"for input.shape \[1, 28, 28\], or be one such image without N\. Received: \[2, 27, 28\]"):
        image.predict(np.zeros((2, 27, 28), np.uint8))
