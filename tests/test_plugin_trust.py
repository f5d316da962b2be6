"""Issue 11: plugins you can trust. One section per finding, each with fake installed distributions
(``fakeplugins.write_dist``) the way the registry tests use them; every test here fails on the code
before the issue.

1. a bundle's recorded provider is enforced on load;   2. plugin import failures of any kind are contained;
3. built-ins are never shadowed, qualified names;      4. the layer contract is checked at run time;
5. what a bundle stores (FORMAT.md);                   6. authoring (gradient report; new-layer: test_new_layer.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest

import cnnkit
from cnnkit import bundle
from cnnkit.plugins import registry
from cnnkit.testing import check_gradients

from fakeplugins import CNNKIT, SCALE_MODULE, subprocess_env, write_dist

ROOT = Path(__file__).resolve().parent.parent
FLAT = {"input": {"shape": [4]}, "layers": [{"type": "dense", "units": 3}, {"type": "tanhish"}, {"type": "softmax"}]}

# Same type name, other math: what "another distribution provides it" can mean for predictions.
OTHER_TANH = SCALE_MODULE.replace("factor: float = 2.0", "factor: float = -3.0")


@pytest.fixture
def site(plugin_dir):
    """conftest's plugin_dir: a sys.path folder for fake distributions, an empty registry cache."""
    return plugin_dir


def uninstall(site: Path, dist: str) -> None:
    for info in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()


def cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNKIT, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def saved_with_hidden(site: Path, tmp_path: Path) -> Path:
    write_dist(site, "fake-hidden", "0.1.0", {"tanhish": "fake_hidden_mod:Scale"}, {"fake_hidden_mod": SCALE_MODULE})
    return cnnkit.save(cnnkit.build(FLAT), tmp_path / "hidden.cnnkit")


# --------------------------------------------------------------------------------------------------
# 1. Provenance is enforced on load


def test_another_distribution_standing_in_is_an_error_naming_both(site, tmp_path):
    path = saved_with_hidden(site, tmp_path)
    uninstall(site, "fake-hidden")
    write_dist(site, "fake-other", "2.0", {"tanhish": "fake_other_mod:Scale"}, {"fake_other_mod": OTHER_TANH})
    with pytest.raises(cnnkit.BundleError) as err:
        cnnkit.load(path)
    message = str(err.value)
    assert "layer type 'tanhish' was recorded from fake-hidden 0.1.0" in message and "fake-other 2.0 provides 'tanhish' instead" in message
    assert "pip install 'fake-hidden==0.1.0' to get the recorded one" in message and "--allow-provider-mismatch" in message
    with pytest.warns(cnnkit.ProviderMismatchWarning, match=r"recorded from fake-hidden 0\.1\.0; using fake-other 2\.0 instead, as allowed"):
        model = cnnkit.load(path, allow_provider_mismatch=True)
    assert model.layers[1].entry.dist == "fake-other"


def test_a_builtin_never_stands_in_for_a_plugin_type_of_the_same_name(site, tmp_path):
    # Found by trying `cnnkit new-layer relu`: after uninstalling the plugin, its bundle offered
    # cnnkit's own relu as a stand-in (and --allow-provider-mismatch then failed on the plugin's params).
    write_dist(site, "fake-relu", "0.1.0", {"relu": "fake_relu_mod:Scale"}, {"fake_relu_mod": SCALE_MODULE})
    spec = json.loads(json.dumps(FLAT))
    spec["layers"][1]["type"] = "fake-relu:relu"
    path = cnnkit.save(cnnkit.build(spec), tmp_path / "plugin-relu.cnnkit")
    uninstall(site, "fake-relu")
    for allow in (False, True):
        with pytest.raises(cnnkit.BundleError, match=r"layer type 'relu' comes from fake-relu 0\.1\.0, which is not installed: pip install fake-relu$"):
            cnnkit.load(path, allow_provider_mismatch=allow)


def test_another_version_of_the_recorded_distribution_loads_with_a_warning(site, tmp_path):
    path = saved_with_hidden(site, tmp_path)
    uninstall(site, "fake-hidden")
    write_dist(site, "fake-hidden", "0.2.0", {"tanhish": "fake_hidden_mod:Scale"})
    with pytest.warns(cnnkit.ProviderMismatchWarning, match=r"'tanhish' was recorded from fake-hidden 0\.1\.0; the installed fake-hidden 0\.2\.0 is used"):
        cnnkit.load(path)
    write_dist(site, "fake-twin", "1.0", {"tanhish": "fake_twin_mod:Scale"}, {"fake_twin_mod": OTHER_TANH})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The recorded distribution wins even though the plain name is now ambiguous.
        assert cnnkit.load(path).layers[1].entry.dist == "fake-hidden"


def test_same_provider_loads_silently_and_builtins_ignore_the_cnnkit_version(site, tmp_path):
    path = saved_with_hidden(site, tmp_path)
    payload = msgpack.unpackb(msgpack.unpackb(path.read_bytes())["payload"])
    payload["providers"]["dense"]["version"] = "0.0.1"  # built-ins are defined by the format, not the version
    body = msgpack.packb(payload, use_bin_type=True)
    path.write_bytes(msgpack.packb({"format": bundle.FORMAT, "version": list(bundle.VERSION), "sha256": hashlib.sha256(body).digest(), "payload": body}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnnkit.load(path)


def test_cli_provenance_errors_warnings_and_inspect(site, tmp_path):
    path = saved_with_hidden(site, tmp_path)
    images = tmp_path / "x.npy"
    np.save(images, np.full((1, 4), 3.0, np.float32))  # raw values above 1: no pixel-range warning among the provenance lines
    uninstall(site, "fake-hidden")
    write_dist(site, "fake-hidden", "0.3", {"tanhish": "fake_hidden_mod:Scale"})
    env = subprocess_env(site)
    newer = cli("predict", path, images, "--json", env=env)
    assert newer.returncode == 0, newer.stderr
    assert newer.stderr == f"warning: {path}: layer type 'tanhish' was recorded from fake-hidden 0.1.0; the installed fake-hidden 0.3 is used (results may differ)\n"
    json.loads(newer.stdout)
    uninstall(site, "fake-hidden")
    write_dist(site, "fake-other", "2.0", {"tanhish": "fake_other_mod:Scale"}, {"fake_other_mod": OTHER_TANH})
    refused = cli("predict", path, images, env=env)
    assert refused.returncode == 1 and refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    assert "recorded from fake-hidden 0.1.0" in refused.stderr and "fake-other 2.0" in refused.stderr
    allowed = cli("predict", path, images, "--allow-provider-mismatch", env=env)
    assert allowed.returncode == 0 and allowed.stderr.startswith("warning: ") and len(allowed.stderr.splitlines()) == 1
    info = json.loads(cli("inspect", path, "--json", env=env).stdout)
    row = info["layers"][1]
    assert (row["type"], row["provider"], row["installed"], row["provenance"]) == ("fake-hidden:tanhish", "fake-hidden 0.1.0", "fake-other 2.0", "other distribution")
    shown = cli("inspect", path, env=env).stdout
    assert "fake-hidden 0.1.0" in shown and "fake-other 2.0 (other distribution)" in shown


def test_bundles_written_before_qualified_types_still_load_and_are_checked(site, tmp_path):
    """Format 1.0 (today's main): plain plugin types, providers keyed by them, maxpool stride null."""
    write_dist(site, "fake-hidden", "0.1.0", {"tanhish": "fake_hidden_mod:Scale"}, {"fake_hidden_mod": SCALE_MODULE})
    spec = {"input": {"shape": [1, 4, 4]}, "layers": [{"type": "maxpool2d"}, {"type": "flatten"}, {"type": "tanhish"}, {"type": "softmax"}]}
    model = cnnkit.build(spec)
    payload = msgpack.unpackb(msgpack.unpackb(bundle.encode(model))["payload"])
    payload["spec"]["layers"][0]["stride"] = None
    payload["spec"]["layers"][2]["type"] = "tanhish"
    payload["providers"] = {"maxpool2d": payload["providers"]["maxpool2d"], "flatten": payload["providers"]["flatten"],
                            "tanhish": {"dist": "fake-hidden", "version": "0.1.0"}, "softmax": payload["providers"]["softmax"]}
    body = msgpack.packb(payload, use_bin_type=True)
    old = tmp_path / "old.cnnkit"
    old.write_bytes(msgpack.packb({"format": bundle.FORMAT, "version": [1, 0], "sha256": hashlib.sha256(body).digest(), "payload": body}))
    loaded = cnnkit.load(old)
    assert [r.type for r in loaded.layers] == ["maxpool2d", "flatten", "fake-hidden:tanhish", "softmax"]
    assert loaded.spec.to_dict()["layers"][0] == {"type": "maxpool2d", "pool_size": 2, "stride": 2}
    uninstall(site, "fake-hidden")
    write_dist(site, "fake-other", "2.0", {"tanhish": "fake_other_mod:Scale"}, {"fake_other_mod": OTHER_TANH})
    with pytest.raises(cnnkit.BundleError, match="recorded from fake-hidden 0.1.0"):
        cnnkit.load(old)


def test_a_qualified_type_must_match_its_recorded_distribution(site, tmp_path):
    path = saved_with_hidden(site, tmp_path)
    payload = msgpack.unpackb(msgpack.unpackb(path.read_bytes())["payload"])
    payload["providers"]["fake-hidden:tanhish"]["dist"] = "fake-other"
    body = msgpack.packb(payload, use_bin_type=True)
    path.write_bytes(msgpack.packb({"format": bundle.FORMAT, "version": list(bundle.VERSION), "sha256": hashlib.sha256(body).digest(), "payload": body}))
    with pytest.raises(cnnkit.BundleError, match=r"providers\.fake-hidden:tanhish\.dist is 'fake-other', but the type names distribution 'fake-hidden'"):
        bundle.read(path)


# --------------------------------------------------------------------------------------------------
# 2. Plugin import failures of any kind are contained


EXITS_AT_IMPORT = "import sys\nsys.exit(3)\n"
PRINTS_AT_IMPORT = 'print("hello from a chatty plugin")\n' + SCALE_MODULE


def test_a_plugin_calling_sys_exit_at_import_takes_nothing_down(tmp_path):
    write_dist(tmp_path, "fake-exit", "0.1", {"quitter": "fake_exit_mod:Quitter"}, {"fake_exit_mod": EXITS_AT_IMPORT})
    env = subprocess_env(tmp_path)
    listed = cli("layers", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["qualified"]: r for r in json.loads(listed.stdout)}
    assert "failed to import: SystemExit: 3" in rows["fake-exit:quitter"]["error"] and "params" in rows["cnnkit:conv2d"]
    table = cli("layers", env=env)
    assert table.returncode == 0 and "SystemExit" in table.stdout
    schema = cli("schema", env=env)
    assert schema.returncode == 0 and "quitter" in schema.stderr
    assert "conv2d" in json.loads(schema.stdout)["properties"]["layers"]["items"]["properties"]["type"]["enum"]
    assert cli("validate", ROOT / "specs" / "fashion_mnist_seed.json", env=env).returncode == 0
    spec = tmp_path / "quit.json"
    spec.write_text(json.dumps({"input": {"shape": [4]}, "layers": [{"type": "quitter"}]}))
    used = cli("validate", spec, env=env)
    assert used.returncode == 1 and used.stderr.startswith("error: layers[0].type: entry point 'quitter = fake_exit_mod:Quitter' from fake-exit 0.1 failed to import: SystemExit: 3")


def test_output_a_plugin_prints_at_import_goes_to_stderr_so_json_stays_valid(tmp_path):
    write_dist(tmp_path, "fake-chatty", "0.1", {"chatty": "fake_chatty_mod:Scale"}, {"fake_chatty_mod": PRINTS_AT_IMPORT})
    env = subprocess_env(tmp_path)
    spec = tmp_path / "chatty.json"
    spec.write_text(json.dumps({"input": {"shape": [4]}, "layers": [{"type": "chatty"}, {"type": "dense", "units": 2}]}))
    result = cli("summary", spec, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"][0]["type"] == "fake-chatty:chatty"
    assert "hello from a chatty plugin" in result.stderr
    assert json.loads(cli("layers", "--json", env=env).stdout)


# --------------------------------------------------------------------------------------------------
# 3. Built-ins are never shadowed; qualified types


def test_a_plugin_registering_relu_neither_breaks_nor_replaces_the_builtin(tmp_path):
    write_dist(tmp_path, "fake-usurper", "0.1", {"relu": "fake_usurper_mod:Scale"}, {"fake_usurper_mod": SCALE_MODULE})
    env = subprocess_env(tmp_path)
    seed = cli("summary", ROOT / "specs" / "fashion_mnist_seed.json", "--json", env=env)
    assert seed.returncode == 0, seed.stderr
    assert {r["type"]: r["provider"] for r in json.loads(seed.stdout)["layers"]}["relu"] == f"cnnkit {cnnkit.__version__}"
    rows = [r for r in json.loads(cli("layers", "--json", env=env).stdout) if r["type"] == "relu"]
    assert [(r["dist"], "conflict" in r) for r in rows] == [("cnnkit", False), ("fake-usurper", True)]
    assert "shadows the built-in 'relu'" in rows[1]["conflict"] and "usable only as 'fake-usurper:relu'" in rows[1]["conflict"]
    assert "conflict: shadows the built-in 'relu'" in cli("layers", env=env).stdout


def test_qualified_types_pick_a_provider_and_are_what_bundles_record(site, tmp_path):
    write_dist(site, "fake-alpha", "1.0", {"tanhish": "fake_alpha_mod:Scale"}, {"fake_alpha_mod": SCALE_MODULE})
    write_dist(site, "fake-beta", "2.0", {"tanhish": "fake_beta_mod:Scale"}, {"fake_beta_mod": OTHER_TANH})
    with pytest.raises(cnnkit.SpecError, match=r"layers\[1\]\.type: layer type 'tanhish' is provided by more than one distribution: .*write the qualified type: 'fake-alpha:tanhish' or 'fake-beta:tanhish'"):
        cnnkit.validate_spec(FLAT)
    spec = json.loads(json.dumps(FLAT))
    spec["layers"][1]["type"] = "fake-beta:tanhish"
    model = cnnkit.build(spec)
    assert model.layers[1].entry.dist == "fake-beta" and model.spec.to_dict()["layers"][1]["type"] == "fake-beta:tanhish"
    b = bundle.read(cnnkit.save(model, tmp_path / "beta.cnnkit"))
    assert b.spec["layers"][1]["type"] == "fake-beta:tanhish" and b.providers["fake-beta:tanhish"] == {"dist": "fake-beta", "version": "2.0"}
    assert cnnkit.load(tmp_path / "beta.cnnkit").layers[1].entry.dist == "fake-beta"
    spec["layers"][1]["type"] = "cnnkit:relu"
    assert cnnkit.build(spec).layers[1].type == "relu"  # a qualified built-in is recorded plain
    spec["layers"][1]["type"] = "fake-gamma:tanhish"
    with pytest.raises(cnnkit.SpecError, match=r"from distribution 'fake-gamma' is not installed; installed providers of 'tanhish': 'fake-alpha:tanhish', 'fake-beta:tanhish'"):
        cnnkit.validate_spec(spec)


def test_a_plugin_cannot_pose_as_a_qualified_builtin(site):
    write_dist(site, "fake-poser", "0.1", {"cnnkit:relu": "fake_poser_mod:Scale"}, {"fake_poser_mod": SCALE_MODULE})
    assert registry.find("cnnkit:relu").dist == "cnnkit"
    poser = next(s for s in registry.load_all() if s.entry.dist == "fake-poser")
    assert poser.cls is None and "a layer type name cannot contain ':'" in poser.error


# --------------------------------------------------------------------------------------------------
# 4. The layer contract at run time


def _plugin_module(output_shape: str, forward_y: str) -> str:
    return f'''
import numpy as np
from cnnkit.layers import Layer


class Odd(Layer):
    per_sample_in_training = True

    def output_shape(self, input_shape):
        return {output_shape}

    def forward(self, weights, x, train):
        return {forward_y}, lambda dy: (dy, {{}})
'''


def test_output_shape_must_return_ints(site):
    write_dist(site, "fake-half", "0.1", {"halver": "fake_half_mod:Odd"}, {"fake_half_mod": _plugin_module("(input_shape[0] / 2 + 0.5,)", "x")})
    with pytest.raises(cnnkit.SpecError) as err:
        cnnkit.validate_spec({"input": {"shape": [26]}, "layers": [{"type": "halver"}]})
    assert str(err.value) == "layers[0]: fake-half:halver from fake-half 0.1 breaks the layer contract: output_shape must return a tuple of ints. Received: output_shape([26]) = (13.5,)"


def test_a_negative_output_shape_is_called_the_plugins_bug_not_empty(site):
    # Issue 24, finding 9: a negative size was reported as "output would be empty".
    write_dist(site, "fake-neg", "0.1", {"shrink": "fake_neg_mod:Odd"}, {"fake_neg_mod": _plugin_module("(input_shape[0] - 5,)", "x[:, 5:]")})
    with pytest.raises(cnnkit.SpecError) as err:
        cnnkit.validate_spec({"input": {"shape": [3]}, "layers": [{"type": "shrink"}]})
    assert str(err.value) == ("layers[0]: fake-neg:shrink from fake-neg 0.1 breaks the layer contract: output_shape returned a negative size "
                              "(output_shape([3]) = [-2]); for an input it cannot take, a layer raises ValueError(\"what is wrong. Received: ...\")")


def test_check_layer_flags_a_non_integer_output_shape(site):
    from cnnkit.testing import run_checks

    write_dist(site, "fake-half2", "0.1", {"halver2": "fake_half2_mod:Odd"}, {"fake_half2_mod": _plugin_module("(input_shape[0] / 2,)", "x[:, ::2]")})
    _, results = run_checks("halver2", {}, (12,))
    output = next(r for r in results if r.name == "output shape")
    assert (output.status, output.detail) == ("fail", "output_shape([12]) returned (6.0,); it must return a tuple of ints")


def test_every_pass_checks_each_layers_shape_and_dtype(site):
    write_dist(site, "fake-wrong", "0.1", {"wide": "fake_wrong_mod:Odd"}, {"fake_wrong_mod": _plugin_module("tuple(input_shape)", "np.concatenate([x, x], axis=1)")})
    write_dist(site, "fake-f64", "0.1", {"f64": "fake_f64_mod:Odd"}, {"fake_f64_mod": _plugin_module("tuple(input_shape)", "x.astype(np.float64)")})
    x = np.ones((5, 4), np.float32)
    wide = cnnkit.build({"input": {"shape": [4]}, "layers": [{"type": "relu"}, {"type": "wide"}, {"type": "dense", "units": 2}]})
    with pytest.raises(cnnkit.RegistryError) as err:
        wide.predict(x, preprocessed=True)
    assert str(err.value) == ("layers[1] (fake-wrong:wide from fake-wrong 0.1) breaks the layer contract: forward (inference) returned shape [5, 8], "
                              "but output_shape([4]) declares [4] per sample ([5, 4] for this batch) (a bug in the plugin fake-wrong 0.1, not in cnnkit: report it to its author)")
    f64 = cnnkit.build({"input": {"shape": [4]}, "layers": [{"type": "f64"}, {"type": "dense", "units": 2}]})
    with pytest.raises(cnnkit.RegistryError, match=r"^layers\[0\] \(fake-f64:f64 from fake-f64 0\.1\) breaks the layer contract: forward \(training\) turned float32 input into float64"):
        f64.forward(x, train=True)


def test_contract_errors_are_one_line_from_the_cli(tmp_path, tiny_spec):
    write_dist(tmp_path / "site", "fake-wrong", "0.1", {"wide": "fake_wrong_mod:Odd"}, {"fake_wrong_mod": _plugin_module("tuple(input_shape)", "np.concatenate([x, x], axis=1)")})
    spec = json.loads(json.dumps(tiny_spec))
    spec["layers"].insert(1, {"type": "wide"})
    (tmp_path / "wide.json").write_text(json.dumps(spec))
    result = cli("run", tmp_path / "wide.json", "--quiet", "--out", tmp_path / "wide.cnnkit", env=subprocess_env(tmp_path / "site"))
    assert result.returncode == 1 and result.stderr.startswith("error: layers[1] (fake-wrong:wide from fake-wrong 0.1) breaks the layer contract: forward (training) returned shape")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "wide.cnnkit").exists()


# --------------------------------------------------------------------------------------------------
# 5. What a bundle stores


def test_maxpool_stride_is_stored_filled_in_and_bias_free_layers_store_no_bias(tmp_path):
    model = cnnkit.build({"input": {"shape": [1, 6, 6]}, "layers": [{"type": "conv2d", "filters": 2, "kernel_size": 3, "use_bias": False},
                                                                    {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"}, {"type": "dense", "units": 3, "use_bias": False}]})
    b = bundle.read(cnnkit.save(model, tmp_path / "m.cnnkit"))
    assert b.version == (1, 1)
    assert b.spec["layers"][1] == {"type": "maxpool2d", "pool_size": 2, "stride": 2}
    assert sorted(b.weights) == ["0.kernel", "3.kernel"]


def test_docs_layers_md_is_up_to_date():
    from cnnkit.plugins.layerdoc import layers_markdown

    statuses = registry.load_all()
    if {s.entry.dist for s in statuses} != {"cnnkit", "cnnkit-extra"}:
        pytest.skip("docs/LAYERS.md documents the development setup: cnnkit and plugins/cnnkit-extra only")
    assert (ROOT / "docs" / "LAYERS.md").read_text() == layers_markdown(statuses), "regenerate it: make layers-doc"


# --------------------------------------------------------------------------------------------------
# 6. Authoring: a failed gradient check says how far off it is


def test_gradient_failure_reports_absolute_and_relative_error_and_the_ratio():
    from cnnkit.layers import Layer

    class Halved(Layer):  # backprop returns half the true gradient
        def forward(self, weights, x, train):
            return 2 * x, lambda dy: (dy, {})

    with pytest.raises(AssertionError) as err:
        check_gradients(Halved(), (3,))
    message = str(err.value)
    assert "max abs error" in message and "max relative error 0.5" in message and "ratio analytic/numeric 0.5" in message


def run_from_format_md(path: Path, raw: np.ndarray) -> np.ndarray:
    """Probabilities for ``raw`` images computed from the bundle file with msgpack and NumPy only,
    following docs/FORMAT.md ("Layers", "Running a bundle") and nothing of cnnkit's code."""
    outer = msgpack.unpackb(path.read_bytes())
    assert outer["format"] == "cnnkit.bundle" and outer["version"][0] == 1
    assert hashlib.sha256(outer["payload"]).digest() == outer["sha256"]
    payload = msgpack.unpackb(outer["payload"])
    spec = payload["spec"]
    w = {name: np.frombuffer(e["data"], "<" + {"float32": "f4"}[e["dtype"]]).reshape(e["shape"]).astype(np.float64) for name, e in payload["weights"].items()}
    pre = spec["input"]["preprocess"]
    x = raw.astype(np.float64).reshape(len(raw), *spec["input"]["shape"]) / pre["divide"] - pre["subtract"]
    layers = spec["layers"]
    if layers[-1]["type"] == "softmax":
        layers = layers[:-1]  # probabilities come from one softmax at the end either way
    for i, layer in enumerate(layers):
        kind = layer["type"]
        if kind == "conv2d":
            k, s, pad = layer["kernel_size"], layer["stride"], layer["padding"]
            n, c, h, wd = x.shape
            pads = []
            for size in (h, wd):
                if pad == "valid":
                    pads.append((0, 0))
                elif pad == "same":
                    total = max((-(-size // s) - 1) * s + k - size, 0)
                    pads.append((total // 2, total - total // 2))
                else:
                    pads.append((pad, pad))
            xp = np.pad(x, ((0, 0), (0, 0), *pads))
            ho, wo = [(size + sum(p) - k) // s + 1 for size, p in zip((h, wd), pads)]
            y = np.zeros((n, layer["filters"], ho, wo))
            for a in range(ho):
                for b in range(wo):
                    window = xp[:, :, a * s : a * s + k, b * s : b * s + k]
                    y[:, :, a, b] = np.einsum("ncuv,fcuv->nf", window, w[f"{i}.kernel"])
            x = y + (w[f"{i}.bias"][None, :, None, None] if layer["use_bias"] else 0)
        elif kind == "maxpool2d":
            k, s = layer["pool_size"], layer["stride"] or layer["pool_size"]
            ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
            x = np.array([[[[x[n, c, a * s : a * s + k, b * s : b * s + k].max() for b in range(wo)] for a in range(ho)] for c in range(x.shape[1])] for n in range(len(x))])
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "dense":
            x = x @ w[f"{i}.kernel"] + (w[f"{i}.bias"] if layer["use_bias"] else 0)
        elif kind == "relu":
            x = np.maximum(x, 0)
        else:
            raise AssertionError(f"FORMAT.md defines no built-in layer {kind!r}")
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_format_md_is_enough_to_run_a_bundle_of_builtin_layers(tmp_path):
    spec = {
        "input": {"shape": [2, 9, 8]},
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel_size": 4, "padding": "same"},  # odd total padding
            {"type": "relu"},
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": "same", "use_bias": False},
            {"type": "maxpool2d", "pool_size": 2, "stride": 1},
            {"type": "conv2d", "filters": 2, "kernel_size": 2, "padding": 1},
            {"type": "flatten"},
            {"type": "dense", "units": 5, "use_bias": False},
            {"type": "relu"},
            {"type": "dense", "units": 3},
            {"type": "softmax"},
        ],
    }
    model = cnnkit.build(spec)
    rng = np.random.default_rng(0)
    for name in model.weights:  # non-zero biases, so their layout matters
        model.weights[name][...] = rng.normal(0, 0.5, model.weights[name].shape)
    path = cnnkit.save(model, tmp_path / "builtin.cnnkit")
    raw = rng.integers(0, 256, (4, 2, 9, 8)).astype(np.uint8)
    np.testing.assert_allclose(run_from_format_md(path, raw), model.predict_proba(raw), rtol=1e-4, atol=1e-6)
