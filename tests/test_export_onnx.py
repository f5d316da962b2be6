"""ONNX export: onnxruntime's probabilities equal cnnkit's, the graph's contract, and every bad input.

The parity tests train real bundles briefly (equality matters here, not accuracy) and compare on
2,000 real Fashion-MNIST test images. The CLI cases run `cnnkit export` as a subprocess, with fake
plugins installed the way pip would (a dist-info folder on PYTHONPATH).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.errors import CnnkitError

from conftest import REAL_DATA, TINY_SPEC
from fakeplugins import CNNKIT, SCALE_MODULE, subprocess_env, write_dist

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cnnkit.export import export_bundle  # noqa: E402
from cnnkit.export.onnx import OPSET, to_onnx  # noqa: E402

pytestmark = pytest.mark.onnx
SPECS = Path(__file__).resolve().parent.parent / "specs"


def session(path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_batches(sess, pixels: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([sess.run(["probabilities"], {"pixels": pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)])


@pytest.fixture(scope="module")
def real_data():
    if not REAL_DATA.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    from cnnkit.data import load_fashion_mnist

    return load_fashion_mnist(REAL_DATA, train_limit=1000, test_limit=2000)


@pytest.mark.realdata
@pytest.mark.parametrize("spec_file", ["fashion_mnist_seed.json", "fashion_mnist_fast.json", "fashion_mnist_extra.json", "fashion_mnist_best.json"])
def test_onnxruntime_equals_predict_proba_on_real_images(spec_file, real_data, tmp_path):
    spec = json.loads((SPECS / spec_file).read_text())
    spec["train"]["epochs"] = 1
    # At most 32 per batch: the best spec's 128 would take 8 steps, too few to predict more than 3 classes.
    spec["train"]["batch_size"] = min(spec["train"]["batch_size"], 32)
    spec["data"].update(dir=str(REAL_DATA), train_limit=1000, test_limit=2000)
    bundle = cnnkit.train(spec, real_data).save(tmp_path / "m.cnnkit")
    out = export_bundle(bundle, tmp_path / "m.onnx")
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import] == [OPSET]
    pixels = real_data.test_images[:, None]  # uint8 (2000, 1, 28, 28): the graph takes (N, *input_shape)
    assert pixels.dtype == np.uint8 and len(pixels) == 2000
    expected = cnnkit.load(bundle).predict_proba(real_data.test_images)
    sess = session(out)
    for batch in (1, 256):
        got = run_batches(sess, pixels, batch)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # A trained model, not a constant one: the comparison covers real, varied predictions.
    assert len(set(expected.argmax(1))) > 3


def small_spec(layers, shape=(3, 9, 9)) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(input={"shape": list(shape), "preprocess": {"divide": 127.5, "subtract": 1.0}}, layers=layers)
    return spec


CONV_VARIANTS = [
    {"type": "conv2d", "filters": 4, "kernel_size": 3},
    {"type": "conv2d", "filters": 4, "kernel_size": 4, "padding": "same", "use_bias": False},  # uneven padding
    {"type": "conv2d", "filters": 4, "kernel_size": 4, "stride": 2, "padding": "same"},
    {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 3, "padding": 2},
]


@pytest.mark.parametrize("conv", CONV_VARIANTS, ids=lambda c: f"k{c['kernel_size']}-s{c.get('stride', 1)}-{c.get('padding', 'valid')}")
@pytest.mark.parametrize("input_dtype", ["uint8", "float32"])
def test_every_built_in_layer_exports_and_matches(conv, input_dtype):
    layers = [conv, {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2, "stride": 1}, {"type": "flatten"},
              {"type": "dense", "units": 7, "use_bias": False}, {"type": "softmax"}, {"type": "dense", "units": 5}]
    model = cnnkit.build(small_spec(layers))  # a softmax in the middle exports; the end gets one
    rng = np.random.default_rng(1)
    for name in model.weights:  # non-zero biases, so a dropped bias would show
        model.weights[name][...] = rng.normal(0, 0.5, model.weights[name].shape)
    proto = to_onnx(model, input_dtype)
    onnx.checker.check_model(proto, full_check=True)
    graph_input = proto.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["N", 3, 9, 9]
    assert graph_input.type.tensor_type.elem_type == {"uint8": onnx.TensorProto.UINT8, "float32": onnx.TensorProto.FLOAT}[input_dtype]
    pixels = rng.integers(0, 256, (33, 3, 9, 9)).astype(input_dtype)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["probabilities"], {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), rtol=0, atol=1e-5)
    assert got.shape == (33, 5)


@pytest.mark.parametrize("layer", [
    {"type": "batchnorm2d", "eps": 1e-3}, {"type": "dropout", "rate": 0.5}, {"type": "avgpool2d"},
    {"type": "avgpool2d", "pool_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
    {"type": "tanh"}, {"type": "sigmoid"}, {"type": "global_avg_pool2d"},
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_more_core_layers_export_and_match(layer):
    layers = [{"type": "conv2d", "filters": 4, "kernel_size": 3}, layer, {"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "softmax"}]
    model = cnnkit.build(small_spec(layers))
    rng = np.random.default_rng(4)
    for name in model.weights:  # non-trivial running statistics too
        model.weights[name][...] = rng.uniform(0.5, 1.5, model.weights[name].shape) if name.endswith("running_var") else rng.normal(0, 0.5, model.weights[name].shape)
    proto = to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    pixels = rng.integers(0, 256, (17, 3, 9, 9)).astype(np.uint8)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), rtol=0, atol=1e-5)


def test_metadata_carries_classes_spec_and_providers(tmp_path):
    model = cnnkit.build(small_spec([{"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "softmax"}], shape=(1, 4, 4)))
    model.classes = ["cat", "dog", "émeu"]
    bundle = model.save(tmp_path / "m.cnnkit")
    proto = onnx.load(str(export_bundle(bundle)))  # default name: the bundle's, with .onnx
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["cnnkit.classes"]) == ["cat", "dog", "émeu"]
    assert json.loads(props["cnnkit.spec"]) == cnnkit.load(bundle).spec.to_dict()
    assert json.loads(props["cnnkit.providers"])["dense"] == {"dist": "cnnkit", "version": cnnkit.__version__}
    assert props["cnnkit.input_dtype"] == "uint8"
    assert (tmp_path / "m.onnx").is_file() and not list(tmp_path.glob("*.tmp*"))


def test_plain_model_without_softmax_ends_in_probabilities():
    model = cnnkit.build(small_spec([{"type": "flatten"}, {"type": "dense", "units": 3}], shape=(1, 5, 5)))
    model.weights["1.kernel"][...] = np.random.default_rng(0).normal(0, 1, model.weights["1.kernel"].shape)
    proto = to_onnx(model)
    pixels = np.random.default_rng(2).integers(0, 256, (4, 1, 5, 5)).astype(np.uint8)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(got, model.predict_proba(pixels), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Bad input: one line, exit 1, no file written or clobbered

HOOKED_SCALE = SCALE_MODULE + '''
    def to_onnx(self, g, x, weights, input_shape):
        return g.node("Mul", [x, g.constant(self.params.factor * WRONG, "factor")])

WRONG = 1.0
'''


def cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNKIT, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def plugin_bundle(tmp_path):
    """A bundle using layer 'scale' (index 2) from fake distribution fake-scale 1.2.3, which has no export hook."""
    site = tmp_path / "site"
    write_dist(site, "fake-scale", "1.2.3", {"scale": "fake_scale_mod:Scale"}, {"fake_scale_mod": SCALE_MODULE})
    spec = small_spec([{"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "scale", "factor": 0.5}, {"type": "softmax"}], shape=(1, 4, 4))
    env = subprocess_env(site)
    code = f"import cnnkit, json; cnnkit.build(json.loads({json.dumps(json.dumps(spec))})).save({str(tmp_path / 'p.cnnkit')!r})"
    subprocess.run([CNNKIT[0], "-c", code], env=env, check=True, timeout=120)
    return tmp_path / "p.cnnkit", site, env


def test_layer_without_hook_names_layer_index_and_distribution_and_leaves_old_file(plugin_bundle, tmp_path):
    bundle, site, env = plugin_bundle
    out = tmp_path / "old.onnx"
    out.write_bytes(b"previous contents")
    one_line_error(cli("export", bundle, "--out", out, env=env), "--force")  # not an ONNX file cnnkit wrote
    result = cli("export", bundle, "--format", "onnx", "--out", out, "--force", env=env)
    one_line_error(result, "layer 2 ('scale', from fake-scale 1.2.3) has no to_onnx export hook")
    assert out.read_bytes() == b"previous contents" and sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx", "p.cnnkit", "site"]


def test_hook_that_does_not_match_forward_is_caught_before_writing(plugin_bundle, tmp_path):
    bundle, site, env = plugin_bundle
    module = site / "fake_scale_mod.py"
    module.write_text(HOOKED_SCALE.replace("WRONG = 1.0", "WRONG = 1.5"))
    one_line_error(cli("export", bundle, "--out", tmp_path / "m.onnx", env=env), "the to_onnx hook of layer 2 ('scale', from fake-scale 1.2.3) does not match its forward")
    module.write_text(HOOKED_SCALE.replace("WRONG = 1.0", "WRONG = None"))  # the hook crashes
    one_line_error(cli("export", bundle, "--out", tmp_path / "m.onnx", env=env), "the to_onnx hook of layer 2 ('scale', from fake-scale 1.2.3) failed: TypeError")
    assert not (tmp_path / "m.onnx").exists()
    module.write_text(HOOKED_SCALE)  # a correct hook: a plugin layer exports
    result = cli("export", bundle, "--out", tmp_path / "m.onnx", env=env)
    assert result.returncode == 0, result.stderr
    assert onnx.load(str(tmp_path / "m.onnx")).graph.output[0].name == "probabilities"


def test_missing_plugin_unknown_format_and_bad_paths(plugin_bundle, tmp_path):
    bundle, site, env = plugin_bundle
    one_line_error(cli("export", bundle, "--format", "tflite", "--out", tmp_path / "m.tflite", env=env), "unknown export format 'tflite'")
    one_line_error(cli("export", bundle, "--out", tmp_path / "no" / "m.onnx", env=env), "folder", "does not exist")
    one_line_error(cli("export", bundle, "--out", bundle, env=env), "the bundle being exported")
    one_line_error(cli("export", bundle, "--input-dtype", "int8", "--out", tmp_path / "m.onnx", env=env), "input dtype must be one of uint8, float32")
    shutil.rmtree(next(site.glob("fake_scale-1.2.3.dist-info")))  # uninstall the plugin
    one_line_error(cli("export", bundle, "--out", tmp_path / "m.onnx", env=env), "layer type 'scale' comes from fake-scale 1.2.3, which is not installed: pip install fake-scale")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.cnnkit", "site"]


def test_without_onnx_installed_the_error_names_the_extra(plugin_bundle, tmp_path):
    bundle, site, env = plugin_bundle
    shadow = tmp_path / "shadow"  # an `onnx` package that fails to import, as when it is not installed
    (shadow / "onnx").mkdir(parents=True)
    (shadow / "onnx" / "__init__.py").write_text("raise ImportError('No module named onnx')\n")
    result = cli("export", bundle, "--out", tmp_path / "m.onnx", env=subprocess_env(shadow, site))
    one_line_error(result, "pip install 'cnnkit[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_library_errors_are_cnnkit_errors(tmp_path):
    model = cnnkit.build(small_spec([{"type": "flatten"}, {"type": "dense", "units": 3}], shape=(1, 4, 4)))
    with pytest.raises(CnnkitError, match="input dtype"):
        to_onnx(model, "float16")
    with pytest.raises(CnnkitError, match="unknown export format"):
        export_bundle(model.save(tmp_path / "m.cnnkit"), tmp_path / "m.x", "x")


# --------------------------------------------------------------------------------------------------
# Issue 24, finding 7: every layer without a hook named at once; a wrong hook found layer by layer


def test_every_layer_without_a_hook_is_named_at_once(plugin_dir):
    write_dist(plugin_dir, "fake-two", "0.1", {"scale_a": "fake_two_mod:Scale", "scale_b": "fake_two_mod:Scale"}, {"fake_two_mod": SCALE_MODULE})
    model = cnnkit.build(small_spec([{"type": "scale_a"}, {"type": "flatten"}, {"type": "scale_b"}, {"type": "dense", "units": 3}], shape=(1, 4, 4)))
    with pytest.raises(CnnkitError) as err:
        to_onnx(model)
    assert str(err.value) == ("cannot export to ONNX: 2 layers have no to_onnx export hook: layer 0 ('scale_a', from fake-two 0.1), "
                              "layer 2 ('scale_b', from fake-two 0.1); their providers can add one (see 'Writing a layer plugin' in cnnkit's README)")


def test_a_hook_with_wrong_maths_is_named_by_comparing_layer_by_layer(plugin_dir, tmp_path):
    from cnnkit.export.onnx import save_onnx

    # Two plugin layers with hooks, the second one's maths wrong: the first must not be blamed.
    write_dist(plugin_dir, "fake-hooks", "0.1", {"good": "fake_good_mod:Scale", "bad": "fake_bad_mod:Scale"},
               {"fake_good_mod": HOOKED_SCALE, "fake_bad_mod": HOOKED_SCALE.replace("WRONG = 1.0", "WRONG = 1.5")})
    model = cnnkit.build(small_spec([{"type": "good"}, {"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "bad", "factor": 0.5},
                                     {"type": "dense", "units": 3}], shape=(1, 4, 4)))
    with pytest.raises(CnnkitError) as err:
        save_onnx(model, tmp_path / "m.onnx")
    assert str(err.value).startswith("cannot export to ONNX: the to_onnx hook of layer 3 ('bad', from fake-hooks 0.1) does not match its forward: "
                                     "outputs differ by up to ")
    assert str(err.value).endswith("on random input (forward's values reach " + str(err.value).split("reach ")[1])
    assert not (tmp_path / "m.onnx").exists()
