"""Test-time augmentation (spec ``predict.tta``): the mean of the views' probabilities, everywhere the model predicts.

The expected values are computed by hand from the model's plain predictions of explicitly flipped
and shifted images (``tta=False``), so a view left out, taken twice, shifted the wrong way or
averaged as logits fails the comparison.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.errors import SpecError
from cnnkit.runtime.losses import softmax
from cnnkit.training.validation import score

runner = CliRunner()

# Small and deliberately asymmetric (a dense layer over the flattened image), so every view gives other probabilities.
SPEC = {
    "name": "tta",
    "input": {"shape": [1, 8, 8], "preprocess": {"divide": 255.0, "subtract": 0.5}},
    "layers": [
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": "same"},
        {"type": "batchnorm2d"},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 4},
        {"type": "softmax"},
    ],
}


def model_with(tta: list[str] | None, seed: int = 3) -> cnnkit.Model:
    spec = dict(SPEC, predict={"tta": tta}) if tta is not None else SPEC
    model = cnnkit.build(spec)
    rng = np.random.default_rng(seed)
    for name, w in model.weights.items():  # weights large enough that the views disagree clearly
        w[...] = rng.normal(size=w.shape) if "running_var" not in name else rng.uniform(0.5, 2.0, w.shape)
    return model


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (6, 1, 8, 8)).astype(np.uint8)


def shift_by_hand(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """Raw images moved ``down`` rows and ``right`` columns (negative: up, left), black (0) flowing in."""
    n = max(abs(down), abs(right))
    padded = np.pad(images, ((0, 0), (0, 0), (n, n), (n, n)))  # zeros: black
    h, w = images.shape[-2:]
    return padded[..., n - down : n - down + h, n - right : n - right + w]


def test_hflip_is_the_mean_of_the_two_views_probabilities(pixels):
    model = model_with(["hflip"])
    plain = model.predict_proba(pixels, tta=False)
    mirrored = model.predict_proba(pixels[..., ::-1], tta=False)
    expected = (plain + mirrored) / 2
    got = model.predict_proba(pixels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(plain - mirrored).max() > 0.1  # the views do differ: the comparison has teeth
    # Probabilities, not logits: the mean of the logits' softmax is another (measurably different) answer.
    logits = np.stack([model.logits(model.preprocess(v)) for v in (pixels, pixels[..., ::-1].copy())])
    assert np.abs(softmax(logits.mean(axis=0)) - got).max() > 1e-3
    np.testing.assert_array_equal(model.predict(pixels), got.argmax(axis=1))


def test_shifts_and_hflip_multiply_into_ten_views(pixels):
    model = model_with(["hflip", "shift:2"])
    assert model.spec.predict.views == 10
    views = []
    for base in (pixels, pixels[..., ::-1]):
        views.append(base)
        views += [shift_by_hand(base, down, right) for down, right in ((-2, 0), (2, 0), (0, -2), (0, 2))]
    expected = np.mean([model.predict_proba(v, tta=False) for v in views], axis=0)
    np.testing.assert_allclose(model.predict_proba(pixels), expected, rtol=0, atol=1e-6)


def test_shift_alone_is_five_views_and_the_image_moves_the_way_its_name_says():
    from cnnkit.runtime.tta import shifted

    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(shifted(x, 1, 0, -1.0)[0, 0], [[-1, -1, -1], [0, 1, 2], [3, 4, 5]])  # down
    np.testing.assert_array_equal(shifted(x, 0, -1, -1.0)[0, 0], [[1, 2, -1], [4, 5, -1], [7, 8, -1]])  # left
    assert model_with(["shift:1"]).spec.predict.views == 5


def test_without_tta_nothing_changes(pixels):
    plain, augmented = model_with(None), model_with(["hflip"])
    np.testing.assert_array_equal(augmented.predict_proba(pixels, tta=False), plain.predict_proba(pixels))
    assert "predict" not in plain.spec.to_dict()  # so bundles written without it keep their bytes


def test_the_bundle_keeps_tta_and_older_bundles_load(pixels, tmp_path):
    model = model_with(["hflip", "shift:1"])
    loaded = cnnkit.load(model.save(tmp_path / "tta.cnnkit"))
    assert loaded.spec.predict.tta == ["hflip", "shift:1"]
    np.testing.assert_array_equal(loaded.predict_proba(pixels), model.predict_proba(pixels))
    plain = cnnkit.load(model_with(None).save(tmp_path / "plain.cnnkit"))  # a bundle as cnnkit wrote them before predict.tta
    assert plain.spec.predict.tta == [] and plain.spec.predict.views == 1


def test_validation_scores_are_those_of_the_mean_probabilities(pixels):
    model = model_with(["hflip"])
    x = model.preprocess(pixels)
    labels = np.array([0, 1, 2, 3, 0, 1])
    p = (softmax(model.logits(x).astype(np.float64)) + softmax(model.logits(x[..., ::-1].copy()).astype(np.float64))) / 2
    got = score(model, x, labels, batch_size=4)
    assert got["loss"] == pytest.approx(-np.log(p[np.arange(6), labels]).mean(), rel=1e-9)
    assert got["accuracy"] == pytest.approx(float((p.argmax(axis=1) == labels).mean()))


@pytest.mark.parametrize("tta, fragment", [
    (["vflip"], "each transform is 'hflip' or 'shift:N'"),
    (["hflip", "hflip"], "each transform may appear once"),
    (["shift:1", "shift:2"], "each transform may appear once"),
    (["shift:0"], "'shift:0'"),
    (["shift:8"], "a shift must be smaller than the image (8x8)"),
    ("hflip", "valid list"),
    (["hflip", "shift:1", "shift:2"], "list should have at most 2 items, not 3."),  # not pydantic's "after validation"
])
def test_bad_tta_is_a_spec_error_at_its_path(tta, fragment):
    with pytest.raises(SpecError) as info:
        cnnkit.build(dict(SPEC, predict={"tta": tta}))
    assert "predict.tta" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("tta", ["hflip", ["hflip"], None, 1])
def test_tta_is_true_or_false_in_python(pixels, tta):
    """tta="hflip" must not read as True and apply every view of the bundle."""
    model = model_with(["hflip"])
    with pytest.raises(cnnkit.CnnkitError, match=r"^tta must be True \(the bundle's own predict.tta: \['hflip'\]\) or False \(the images alone\). Received: "):
        model.predict_proba(pixels, tta=tta)
    model.predict_proba(pixels, tta=np.bool_(False))  # numpy's booleans are booleans


def test_tta_needs_images():
    flat = dict(SPEC, input={"shape": [64]}, layers=[{"type": "dense", "units": 4}], predict={"tta": ["hflip"]})
    with pytest.raises(SpecError, match=r"predict.tta: test-time augmentation works on images"):
        cnnkit.build(flat)


def test_cli_predict_evaluate_and_report_use_tta_unless_told_not_to(tmp_path, synthetic_dir):
    pytest.importorskip("matplotlib")
    from conftest import TINY_SPEC, synthetic_images

    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)}, predict={"tta": ["hflip"]})
    (tmp_path / "t.json").write_text(json.dumps(spec))
    bundle = tmp_path / "t.cnnkit"
    ran = runner.invoke(app, ["run", str(tmp_path / "t.json"), "--out", str(bundle)])
    assert ran.exit_code == 0, ran.output
    assert "(3 epochs, batch 16, scored with test-time augmentation hflip); run folder" in ran.stdout.splitlines()[0]
    images, _ = synthetic_images(5, 4)
    np.save(tmp_path / "five.npy", images)
    model = cnnkit.load(bundle)

    def top(*flags: str) -> list[float]:
        result = runner.invoke(app, ["predict", str(bundle), str(tmp_path / "five.npy"), "--json", *flags])
        assert result.exit_code == 0, result.output
        return [r["top"][0]["probability"] for r in json.loads(result.stdout)]

    np.testing.assert_allclose(top(), model.predict_proba(images).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(top("--no-tta"), model.predict_proba(images, tta=False).max(axis=1), rtol=1e-6)
    assert not np.allclose(top(), top("--no-tta"))

    def accuracy(*flags: str) -> float:
        result = runner.invoke(app, ["evaluate", str(bundle), "--json", *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["accuracy"]

    from cnnkit.data import load_fashion_mnist

    test = load_fashion_mnist(synthetic_dir)
    assert accuracy() == pytest.approx(float((model.predict(test.test_images) == test.test_labels).mean()))
    assert accuracy("--no-tta") == pytest.approx(float((model.predict(test.test_images, tta=False) == test.test_labels).mean()))
    assert model.metadata["metrics"]["test_accuracy"] == pytest.approx(accuracy())  # training scored with TTA too
    assert accuracy() != accuracy("--no-tta")  # the squares' places tell the classes apart: mirrored views mislead

    # What was used is said: in evaluate's JSON and its first line, and by inspect.
    for flags, tta, views, said in (((), ["hflip"], 2, " with test-time augmentation (hflip: 2 views an image)"), (("--no-tta",), [], 1, "")):
        report = json.loads(runner.invoke(app, ["evaluate", str(bundle), "--json", *flags]).stdout)
        assert (report["tta"], report["views"]) == (tta, views)
        first = runner.invoke(app, ["evaluate", str(bundle), *flags]).stdout.splitlines()[0]
        assert first.endswith(f"on {report['examples']:,} test images{said}")
    shown = runner.invoke(app, ["inspect", str(bundle)], env={"COLUMNS": "200"}).stdout
    assert "predict: test-time augmentation hflip (predict, evaluate, report and export: --no-tta turns it off)" in shown
    assert json.loads(runner.invoke(app, ["inspect", str(bundle), "--json"]).stdout)["predict"] == {"tta": ["hflip"]}

    for flags, expected in (((), accuracy()), (("--no-tta",), accuracy("--no-tta"))):
        out = tmp_path / f"report{len(flags)}"
        result = runner.invoke(app, ["report", str(bundle), "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
        page = (out / "index.html").read_text()
        assert f"accuracy <b>{expected:.4f}</b>" in page
        assert ("with test-time augmentation (hflip: 2 views an image)" in page) == (not flags)


onnx_tests = pytest.mark.onnx


@onnx_tests
@pytest.mark.parametrize("tta", [["hflip"], ["hflip", "shift:2"], ["shift:3"]])
@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_onnxruntime_averages_the_same_views(tta, input_dtype, pixels):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnnkit.export.onnx import to_onnx

    model = model_with(tta)
    for use_tta in (True, False):
        proto = to_onnx(model, input_dtype, tta=use_tta)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(["probabilities"], {"pixels": pixels.astype(input_dtype)})[0]
        np.testing.assert_allclose(got, model.predict_proba(pixels, tta=use_tta), rtol=0, atol=2e-6)
        assert json.loads({p.key: p.value for p in proto.metadata_props}["cnnkit.tta"]) == (tta if use_tta else [])
