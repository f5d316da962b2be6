"""Issue 24, findings 3 and 4 and the kit's dtypes: hostile layers that passed `check-layer` and
trained wrong. The kit now calls a layer the way a model does (parts interleaved, two threads at
once), watches the global generators, and runs the per-step guard in float32 and float64.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.layers import Layer, LayerParams, Weight
from cnnkit.testing import check_layer, run_checks


class PerCallState(Layer):
    """Finding 3: keeps its input on self for backprop, so part B's forward replaces part A's input."""

    class Params(LayerParams):
        pass

    def weights(self, input_shape):
        return {"gain": Weight((input_shape[0],), 1.5)}

    def forward(self, weights, x, ctx):
        self.x = x
        gain = weights["gain"].reshape(1, -1, *([1] * (x.ndim - 2)))

        def backprop(dy):
            axes = tuple(i for i in range(dy.ndim) if i != 1)
            return dy * gain, {"gain": (dy * self.x).sum(axis=axes)}

        return x * gain, backprop


class ScratchOnSelf(Layer):
    """Per-call state used within one forward: wrong only when two threads call it at once."""

    class Params(LayerParams):
        pass

    def forward(self, weights, x, ctx):
        self.scratch = x * 2
        time.sleep(0.002)  # stands in for slow array work that releases the GIL (a big product, say)
        y = self.scratch - x
        return y, lambda dy: (dy, {})


class GlobalDropout(Layer):
    """Finding 4: draws its mask from numpy's global generator instead of ctx.rng."""

    class Params(LayerParams):
        rate: float = 0.5

    def forward(self, weights, x, ctx):
        if not ctx.train:
            return x, lambda dy: (dy, {})
        mask = (np.random.random(x.shape) >= self.params.rate).astype(x.dtype) / (1 - self.params.rate)
        return x * mask, lambda dy: (dy * mask, {})


class UnseededDropout(GlobalDropout):
    """Draws from a fresh unseeded generator: no global state changes, but no two runs agree."""

    def forward(self, weights, x, ctx):
        if not ctx.train:
            return x, lambda dy: (dy, {})
        mask = (np.random.default_rng().random(x.shape) >= self.params.rate).astype(x.dtype) / (1 - self.params.rate)
        return x * mask, lambda dy: (dy * mask, {})


class Float64Gradients(Layer):
    """Right values, but a float64 weight gradient in a float32 model."""

    class Params(LayerParams):
        pass

    def weights(self, input_shape):
        return {"bias": Weight((input_shape[0],), 0.0)}

    def forward(self, weights, x, ctx):
        bias = weights["bias"].astype(x.dtype)

        def backprop(dy):
            return dy, {"bias": dy.sum(axis=0).astype(np.float64)}

        return x + bias, backprop


class AlwaysFloat32(Layer):
    """'Keep dtypes' read as 'cast to float32': wrong in the kit's float64 passes."""

    class Params(LayerParams):
        pass

    def forward(self, weights, x, ctx):
        return np.tanh(x).astype(np.float32), lambda dy: (dy * (1 - np.tanh(x) ** 2), {})


def outcome(cls, name: str, input_shape=(4,)):
    _, results = run_checks(cls, {}, input_shape)
    return {r.name: r for r in results}[name]


def test_per_call_state_on_self_fails_interleaved_calls():
    result = outcome(PerCallState, "interleaved calls")
    assert result.status == "fail"
    assert result.detail == ("forward A, forward B, backprop A, backprop B (two parts of a batch, as a model's threads run them) changed A's gradient of 'gain' "
                             "from what A gives alone: per-call state on self? keep what backprop needs in its closure, not on self: one layer object serves "
                             "every thread of a model at once")
    with pytest.raises(AssertionError, match=r"interleaved calls failed"):
        check_layer(PerCallState, {}, (3, 4, 4))


def test_a_race_inside_one_forward_fails_the_two_thread_check():
    result = outcome(ScratchOnSelf, "two threads")
    assert result.status == "fail" and result.detail.startswith("two threads calling the layer at once got results that differ from one thread (")
    assert outcome(ScratchOnSelf, "interleaved calls").status == "pass"  # only threads show this one


def test_global_np_random_is_named_with_the_fix():
    result = outcome(GlobalDropout, "determinism")
    assert result.status == "fail"
    assert result.detail.startswith("forward (train mode) drew from the global generator np.random: draw from ctx.rng, not np.random: ")
    unseeded = outcome(UnseededDropout, "determinism")
    assert unseeded.status == "fail" and unseeded.detail.startswith("two forward passes (train mode) on the same input and weights differ: draw from ctx.rng, not np.random")


def test_dtypes_are_checked_in_float32_and_float64():
    f64 = outcome(Float64Gradients, "dtypes")
    assert (f64.status, f64.detail) == ("fail", "backprop of a float32 pass returned the gradient of 'bias' is float64; keep the input's dtype (float32 in a model, float64 in the kit's gradient checks)")
    f32 = outcome(AlwaysFloat32, "dtypes")
    assert (f32.status, f32.detail) == ("fail", "float64: forward (inference) turned float64 input into float32; keep the input's dtype (float32 in a model)")


def test_builtin_layers_pass_the_new_checks():
    for layer_type, params, shape in [("dense", {"units": 3}, (5,)), ("dropout", {"rate": 0.5}, (3, 4, 4)), ("batchnorm2d", {}, (3, 4, 4)), ("conv2d", {"filters": 2, "kernel_size": 3}, (2, 6, 6))]:
        results = {r.name: r for r in run_checks(layer_type, params, shape)[1]}
        for name in ("dtypes", "determinism", "interleaved calls", "two threads"):
            assert results[name].status == "pass", (layer_type, name, results[name].detail)


def test_check_layer_command_prints_the_failed_check(plugin_dir):
    from fakeplugins import write_dist

    module = "import numpy as np\nfrom cnnkit.layers import Layer, LayerParams, Weight\n\n\n" + _source(PerCallState)
    write_dist(plugin_dir, "fake-state", "0.1", {"stateful": "fake_state_mod:PerCallState"}, {"fake_state_mod": module})
    result = CliRunner().invoke(app, ["check-layer", "stateful", "--input-shape", "3,4,4"])
    assert result.exit_code == 1
    assert "  FAIL  interleaved calls: forward A, forward B, backprop A, backprop B" in result.output
    # Interleaved calls catch per-call state every time; two real threads catch it only when their
    # calls happen to overlap, so that check may fail too.
    assert re.search(r"^error: stateful: (1 check\(s\) failed: interleaved calls|2 check\(s\) failed: interleaved calls, two threads)$", result.output, re.M)


def _source(cls) -> str:
    import inspect

    return inspect.getsource(cls)
