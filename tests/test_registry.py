"""The layer registry: entry-point discovery, lazy imports, broken plugins, conflicts, contract checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnnkit
from cnnkit.plugins import registry
from cnnkit.errors import RegistryError

from fakeplugins import BROKEN_MODULE, SCALE_MODULE, subprocess_env, write_dist

BUILTINS = {"conv2d", "relu", "softmax", "maxpool2d", "flatten", "dense"}


def test_builtins_are_registered_through_entry_points_with_provenance():
    entries = {e.type: e for e in registry.list_layers()}
    assert BUILTINS <= set(entries)
    for layer_type in BUILTINS:
        assert (entries[layer_type].dist, entries[layer_type].version) == ("cnnkit", cnnkit.__version__)
        assert entries[layer_type].value.startswith("cnnkit.layers.")


def test_listing_and_unrelated_specs_import_no_plugin_code(tmp_path):
    """Runs in a fresh interpreter, so sys.modules shows exactly what listing and validation imported."""
    write_dist(tmp_path, "fake-lazy", "1.0", {"lazy_scale": "fake_lazy_mod:Scale"}, {"fake_lazy_mod": SCALE_MODULE})
    probe = """
import json, sys
from cnnkit import validate_spec
from cnnkit.plugins import registry
types = [e.type for e in registry.list_layers()]
after_listing = sorted(m for m in sys.modules if m.startswith(("fake_lazy_mod", "cnnkit_extra", "cnnkit.layers.conv", "cnnkit.layers.pool")))
validate_spec({"input": {"shape": [4]}, "layers": [{"type": "dense", "units": 2}]})
after_spec = sorted(m for m in sys.modules if m.startswith(("fake_lazy_mod", "cnnkit_extra", "cnnkit.layers.conv")))
validate_spec({"input": {"shape": [4]}, "layers": [{"type": "lazy_scale"}]})
print(json.dumps({"types": types, "after_listing": after_listing, "after_spec": after_spec, "used": "fake_lazy_mod" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(tmp_path), capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert "lazy_scale" in report["types"]
    assert report["after_listing"] == []
    assert report["after_spec"] == []
    assert report["used"] is True


def test_plugin_installed_after_import_is_seen(plugin_dir):
    assert "late_scale" not in {e.type for e in registry.list_layers()}
    write_dist(plugin_dir, "fake-late", "0.2", {"late_scale": "fake_late:Scale"}, {"fake_late": SCALE_MODULE})
    entry = registry.find("late_scale")
    assert (entry.dist, entry.version) == ("fake-late", "0.2")
    assert registry.load("late_scale").__name__ == "Scale"


def test_broken_plugin_is_listed_and_breaks_nothing_else(plugin_dir):
    write_dist(plugin_dir, "fake-broken", "0.9", {"broken": "fake_broken:Broken"}, {"fake_broken": BROKEN_MODULE})
    entries = {e.type: e for e in registry.list_layers()}
    assert entries["broken"].provider == "fake-broken 0.9"
    # A spec that does not use it validates and builds.
    model = cnnkit.build({"input": {"shape": [4]}, "layers": [{"type": "dense", "units": 2}]})
    assert model.output_shape == (2,)
    with pytest.raises(RegistryError) as err:
        registry.load("broken")
    message = str(err.value)
    assert "entry point 'broken = fake_broken:Broken' from fake-broken 0.9 failed to import" in message
    assert "ImportError: this plugin is deliberately broken (needs libfoo 9)" in message
    with pytest.raises(cnnkit.SpecError, match=r"layers\[1\]\.type: entry point 'broken = fake_broken:Broken' from fake-broken 0\.9 failed to import"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "relu"}, {"type": "broken"}]})
    statuses = {s.entry.type: s for s in registry.load_all()}
    assert statuses["broken"].cls is None and "deliberately broken" in statuses["broken"].error
    assert all(statuses[t].cls is not None for t in BUILTINS)


def test_two_distributions_claiming_one_type_need_qualified_names(plugin_dir):
    write_dist(plugin_dir, "fake-alpha", "1.0", {"twin": "fake_alpha:Scale"}, {"fake_alpha": SCALE_MODULE})
    write_dist(plugin_dir, "fake-beta", "2.5", {"twin": "fake_beta:Scale"}, {"fake_beta": SCALE_MODULE})
    with pytest.raises(RegistryError) as err:
        registry.find("twin")
    assert "fake-alpha 1.0 (fake_alpha:Scale)" in str(err.value) and "fake-beta 2.5 (fake_beta:Scale)" in str(err.value)
    assert "write the qualified type: 'fake-alpha:twin' or 'fake-beta:twin'" in str(err.value)
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\]\.type: layer type 'twin' is provided by more than one distribution"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "twin"}]})
    assert [e.dist for e in registry.list_layers() if e.type == "twin"] == ["fake-alpha", "fake-beta"]
    assert "fake_alpha" not in sys.modules  # detecting the conflict imported neither
    assert registry.find("fake-beta:twin").value == "fake_beta:Scale"
    assert registry.find("FAKE_Beta:twin").dist == "fake-beta"  # distribution names compare as pip compares them


def test_a_plugin_claiming_a_builtin_name_never_shadows_it(plugin_dir):
    write_dist(plugin_dir, "fake-usurper", "0.1", {"relu": "fake_usurper:Scale"}, {"fake_usurper": SCALE_MODULE})
    assert registry.find("relu").dist == "cnnkit"
    assert registry.find("fake-usurper:relu").value == "fake_usurper:Scale"
    usurper = next(e for e in registry.list_layers() if e.dist == "fake-usurper")
    assert "shadows the built-in 'relu'" in registry.conflict(usurper) and "'fake-usurper:relu'" in registry.conflict(usurper)


CONTRACT_BREAKERS = {
    "not_a_class": ("def not_a_class():\n    pass\n", "does not name a subclass of cnnkit.layers.Layer"),
    "no_forward": ("from cnnkit.layers import Layer\nclass no_forward(Layer):\n    pass\n", "does not implement forward"),
    "loose_params": (
        "from pydantic import ConfigDict\nfrom cnnkit.layers import Layer, LayerParams\n"
        "class loose_params(Layer):\n    class Params(LayerParams):\n        model_config = ConfigDict(extra='allow')\n"
        "    def forward(self, w, x, train):\n        return x, lambda dy: (dy, {})\n",
        "must reject unknown fields",
    ),
    "typed_params": (
        "from cnnkit.layers import Layer, LayerParams\n"
        "class typed_params(Layer):\n    class Params(LayerParams):\n        type: str = 'x'\n"
        "    def forward(self, w, x, train):\n        return x, lambda dy: (dy, {})\n",
        "must not declare a field named 'type'",
    ),
    "plain_params": (
        "from pydantic import BaseModel\nfrom cnnkit.layers import Layer\n"
        "class plain_params(Layer):\n    class Params(BaseModel):\n        pass\n"
        "    def forward(self, w, x, train):\n        return x, lambda dy: (dy, {})\n",
        "Params must subclass cnnkit.layers.LayerParams",
    ),
    "bad_state_names": (
        "from cnnkit.layers import Layer\n"
        "class bad_state_names(Layer):\n    non_trainable = 'running_mean'\n"
        "    def forward(self, w, x, train):\n        return x, lambda dy: (dy, {})\n",
        "non_trainable must be a tuple of weight names",
    ),
    "missing_attr": ("X = 1\n", "failed to import: AttributeError"),
}


@pytest.mark.parametrize("layer_type", sorted(CONTRACT_BREAKERS))
def test_contract_breakers_get_an_error_naming_their_entry_point(plugin_dir, layer_type):
    source, expected = CONTRACT_BREAKERS[layer_type]
    module = f"fake_contract_{layer_type}"
    write_dist(plugin_dir, f"fake-{layer_type.replace('_', '-')}", "0.1", {layer_type: f"{module}:{layer_type}"}, {module: source})
    with pytest.raises(RegistryError) as err:
        registry.load(layer_type)
    message = str(err.value)
    assert message.startswith(f"entry point '{layer_type} = {module}:{layer_type}' from fake-{layer_type.replace('_', '-')} 0.1")
    assert expected in message


def test_unknown_type_suggests_the_closest_name():
    with pytest.raises(RegistryError, match=r"unknown layer type 'maxpool' ?; did you mean 'maxpool2d'\?"):
        registry.find("maxpool")
