"""Third-party plugins end to end: `cnnkit layers`, broken plugins, provenance in bundles, `cnnkit check-layer`.

Fake plugins are real installed distributions as far as importlib.metadata can tell (a dist-info
folder on PYTHONPATH); removing the dist-info is the uninstall. The commands run as subprocesses.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import numpy as np
import pytest

import cnnkit
from cnnkit import bundle
from cnnkit.plugins import registry

from fakeplugins import BROKEN_MODULE, CNNKIT, SCALE_MODULE, subprocess_env, write_dist

WRONG_GRADIENT_MODULE = '''
from cnnkit.layers import Layer


class Doubler(Layer):
    def forward(self, weights, x, train):
        return 2 * x, lambda dy: (dy, {})  # the true input gradient is 2 * dy
'''


def cli(*args, env, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNKIT, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def site(tmp_path):
    """A PYTHONPATH folder holding a working fake plugin and a deliberately broken one."""
    root = tmp_path / "site"
    write_dist(root, "fake-scale", "1.2.3", {"scale": "fake_scale_mod:Scale"}, {"fake_scale_mod": SCALE_MODULE})
    write_dist(root, "fake-broken", "0.9", {"broken": "fake_broken_mod:Broken"}, {"fake_broken_mod": BROKEN_MODULE})
    return root


def test_layers_lists_every_type_with_provider_and_shows_a_broken_plugins_error(site):
    env = subprocess_env(site)
    result = cli("layers", env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3 and line.split("│")[1].strip()}
    assert "fake-scale 1.2.3" in lines["scale"] and "factor: number (default 2.0)" in lines["scale"]
    assert "fake-broken 0.9" in lines["broken"] and "cannot be used" in lines["broken"]
    assert "cnnkit 0.1.0" in lines["conv2d"] and "filters: integer > 0 (required)" in lines["conv2d"]
    rows = {r["type"]: r for r in json.loads(cli("layers", "--json", env=env).stdout)}
    assert "ImportError: this plugin is deliberately broken (needs libfoo 9)" in rows["broken"]["error"]
    assert "params" not in rows["broken"]
    assert (rows["scale"]["dist"], rows["scale"]["version"], rows["scale"]["entry_point"]) == ("fake-scale", "1.2.3", "fake_scale_mod:Scale")
    assert rows["scale"]["params"] == [{"name": "factor", "type": "number", "required": False, "default": 2.0}]


def test_broken_plugin_does_not_stop_specs_that_do_not_use_it(site, tiny_spec, tmp_path):
    env = subprocess_env(site)
    spec = copy.deepcopy(tiny_spec)
    spec["train"]["epochs"] = 1
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    assert cli("validate", path, env=env).returncode == 0
    result = cli("run", path, "--quiet", "--out", tmp_path / "tiny.cnnkit", env=env)
    assert result.returncode == 0, result.stderr
    assert cli("evaluate", tmp_path / "tiny.cnnkit", "--data-dir", spec["data"]["dir"], env=env).returncode == 0
    spec["layers"].insert(1, {"type": "broken"})
    path.write_text(json.dumps(spec))
    result = cli("validate", path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: layers[1].type: entry point 'broken = fake_broken_mod:Broken' from fake-broken 0.9 failed to import: ImportError")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bundle_records_provenance_and_names_the_missing_distribution(site, tiny_spec, tmp_path):
    """Install a plugin, train with it, uninstall it: loading names the distribution and version."""
    env = subprocess_env(site)
    spec = copy.deepcopy(tiny_spec)
    spec["train"]["epochs"] = 1
    spec["layers"].insert(1, {"type": "scale", "factor": 0.5})
    path = tmp_path / "scaled.json"
    path.write_text(json.dumps(spec))
    target = tmp_path / "scaled.cnnkit"
    result = cli("run", path, "--quiet", "--out", target, env=env)
    assert result.returncode == 0, result.stderr
    providers = bundle.read(target).providers  # reading the file needs no plugin
    assert providers["fake-scale:scale"] == {"dist": "fake-scale", "version": "1.2.3"}  # plugin types are recorded qualified
    assert bundle.read(target).spec["layers"][1]["type"] == "fake-scale:scale"
    assert providers["conv2d"] == {"dist": "cnnkit", "version": cnnkit.__version__}
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 28, 28), np.uint8))
    assert cli("predict", target, images, env=env).returncode == 0

    shutil.rmtree(next(site.glob("fake_scale-1.2.3.dist-info")))  # pip uninstall, as importlib.metadata sees it
    expected = f"error: {target}: layer type 'scale' comes from fake-scale 1.2.3, which is not installed: pip install fake-scale\n"
    for args in (("predict", target, images), ("evaluate", target, "--data-dir", spec["data"]["dir"])):
        result = cli(*args, env=env)
        assert (result.returncode, result.stderr, result.stdout) == (1, expected, "")


def test_real_plugin_layers_train_and_round_trip_with_provenance(tiny_spec, tmp_path):
    pytest.importorskip("cnnkit_extra")
    spec = copy.deepcopy(tiny_spec)
    spec["train"].update(epochs=1, optimizer={"type": "adam", "lr": 0.01})
    spec["layers"][1:2] = [{"type": "batchnorm2d"}, {"type": "leaky_relu", "negative_slope": 0.1}]
    model = cnnkit.train(spec)
    assert model.weights["1.running_var"].tolist() != [1.0] * 4  # training moved the running statistics
    path = cnnkit.save(model, tmp_path / "extra.cnnkit")
    providers = bundle.read(path).providers
    assert providers["cnnkit-extra:leaky_relu"] == {"dist": "cnnkit-extra", "version": "0.3.0"}
    assert providers["batchnorm2d"] == {"dist": "cnnkit", "version": cnnkit.__version__}  # in the core since cnnkit-extra 0.2.0
    loaded = cnnkit.load(path)
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))
    entry = registry.find("leaky_relu")
    assert (entry.dist, entry.version) == ("cnnkit-extra", "0.3.0")


def test_check_layer_command(tmp_path):
    write_dist(tmp_path, "fake-doubler", "0.1", {"doubler": "fake_doubler_mod:Doubler"}, {"fake_doubler_mod": WRONG_GRADIENT_MODULE})
    env = subprocess_env(tmp_path)
    ok = cli("check-layer", "conv2d", "--params", '{"filters": 2, "kernel_size": 3}', "--input-shape", "2,6,6", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "PASS  bundle round trip" in ok.stdout and "PASS  training split" in ok.stdout and "ok: conv2d passed 12 checks" in ok.stdout
    bad = cli("check-layer", "doubler", env=env)
    assert bad.returncode == 1
    assert "FAIL  gradients (train): Doubler: gradient of input differs from finite differences" in bad.stdout
    assert "PASS  output shape" in bad.stdout  # the other checks still ran
    assert "SKIP  training split: batch_coupling is 'whole'" in bad.stdout  # Doubler claims no per-sample split
    # Doubler is written for the older contract: one line says so, and it is checked all the same.
    assert "NOTE  layer contract: written for the older layer contract" in bad.stdout
    assert bad.stderr == "error: doubler: 2 check(s) failed: gradients (train), gradients (inference)\n"
    usage = cli("check-layer", "conv2d", "--params", "{filters: 2}", env=env)
    # Bad --params is a usage error: exit 2, as the README says (issue 11, finding 6).
    assert usage.returncode == 2 and usage.stderr.startswith("error: --params is not valid JSON")
    missing = cli("check-layer", "dense", env=env)
    assert (missing.returncode, missing.stderr) == (2, "error: dense params.units: required field is missing\n")
