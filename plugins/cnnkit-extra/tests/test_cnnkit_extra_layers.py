"""cnnkit-extra's layer: the cnnkit conformance kit, plain reference math, bad params.

(batchnorm2d lived here until 0.2.0; it is a core layer now, tested in cnnkit's tests/test_batchnorm.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit.plugins import registry
from cnnkit.testing import check_layer
from cnnkit_extra.leaky_relu import LeakyReLU
from cnnkit.layers import Context


@pytest.mark.parametrize(
    "layer_type, params, input_shape",
    [
        ("leaky_relu", {}, (3, 8, 8)),
        ("leaky_relu", {"negative_slope": 0.3}, (10,)),
        ("leaky_relu", {"negative_slope": 0.0}, (2, 4, 4)),
    ],
)
def test_conformance(layer_type, params, input_shape):
    results = {r.name: r.status for r in check_layer(layer_type, params, input_shape)}
    assert results.pop("randomness") == "skip"  # leaky_relu draws no random numbers
    assert set(results.values()) == {"pass"}


def test_registered_with_this_distribution():
    entries = {e.type: e for e in registry.list_layers()}
    assert (entries["leaky_relu"].dist, entries["leaky_relu"].version) == ("cnnkit-extra", "0.3.0")
    assert entries["batchnorm2d"].dist == "cnnkit"  # moved to the core in 0.2.0: one home per type


def test_leaky_relu_matches_reference():
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 5)).astype(np.float32)
    y, backprop = LeakyReLU(negative_slope=0.2).forward({}, x, Context(False))
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0.2) * x))
    dx, grads = backprop(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.where(x > 0, 1.0, np.float32(0.2)))
    assert grads == {} and y.dtype == np.float32


def test_leaky_relu_rejects_bad_params():
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\]\.negative_slope"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "leaky_relu", "negative_slope": -1}]})
    with pytest.raises(cnnkit.SpecError, match=r"layers\[0\]\.negative_slope"):
        cnnkit.validate_spec({"input": {"shape": [4]}, "layers": [{"type": "leaky_relu", "negative_slope": True}]})
