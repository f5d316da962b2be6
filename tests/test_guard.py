"""Issue 24, findings 1 and 2: every step checks what each layer returns against what it declared
(cnnkit.runtime.guard), and an exception inside a layer names the layer. Each hostile plugin below
trained silently, or failed as a numpy error naming no layer, before the guard.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import cnnkit
from cnnkit.errors import LayerError

from fakeplugins import CNNKIT, subprocess_env, write_dist

# A per-channel gain with one deliberate bug, chosen by BUG (the hostile plugins of the issue).
GAIN = '''
import numpy as np
from cnnkit.layers import Layer, LayerParams, Weight

BUG = {bug!r}
TRAINING_PASSES = [0]


class Gain(Layer):
    class Params(LayerParams):
        pass

    def weights(self, input_shape):
        return {{"gain": Weight((input_shape[0],), 1.0), "seen": Weight((input_shape[0],), 0.0, trainable=False)}}

    def forward(self, weights, x, ctx):
        gain = weights["gain"].reshape(1, -1, *([1] * (x.ndim - 2)))
        y = x * gain
        if BUG == "float64 after the first pass" and len(x) == 7:
            y = y.astype(np.float64)
        if BUG == "wrong shape on batch 7" and len(x) == 7:
            y = y[:, :1]
        TRAINING_PASSES[0] += ctx.train
        if BUG == "raises after the first training pass" and ctx.train and TRAINING_PASSES[0] > 1:
            raise ZeroDivisionError("the plugin divided by zero")
        if ctx.train:
            axes = tuple(i for i in range(x.ndim) if i != 1)
            seen = x.mean(axis=axes)[:1] if BUG == "update of the wrong shape" else x.mean(axis=axes)
            ctx.update("gain" if BUG == "update of a trainable weight" else "seen", seen)

        def backprop(dy):
            axes = tuple(i for i in range(dy.ndim) if i != 1)
            dx = dy * gain
            grads = {{"gain": (dy * x).sum(axis=axes)}}
            if BUG == "dx of the first image only":
                dx = dx[:1]
            if BUG == "gradient of shape (1,)":
                grads["gain"] = grads["gain"].sum(keepdims=True)
            if BUG == "gradient of the wrong rank":
                grads["gain"] = grads["gain"][:, None]
            if BUG == "gradient of a non-trainable weight":
                grads["seen"] = grads["gain"]
            if BUG == "no input gradient":
                dx = None
            return dx, grads

        return y, backprop
'''

CONV_GAIN_DENSE = {"input": {"shape": [1, 6, 6]}, "layers": [
    {"type": "conv2d", "filters": 3, "kernel_size": 3}, {"type": "gain"}, {"type": "flatten"}, {"type": "dense", "units": 2}]}
WHERE = "layers[1] (fake-gain:gain from fake-gain 0.1)"
BLAME = "(a bug in the plugin fake-gain 0.1, not in cnnkit: report it to its author)"


def gain_model(site, bug: str) -> cnnkit.Model:
    write_dist(site, "fake-gain", "0.1", {"gain": "fake_gain_mod:Gain"}, {"fake_gain_mod": GAIN.format(bug=bug)})
    return cnnkit.build(CONV_GAIN_DENSE)


def train_step(model: cnnkit.Model, n: int = 4) -> dict[str, np.ndarray]:
    x = np.random.default_rng(n).normal(size=(n, 1, 6, 6)).astype(np.float32)
    y, backprop = model.forward(x, train=True)
    return backprop(np.ones_like(y))


def test_a_correct_layer_passes_every_step(plugin_dir):
    model = gain_model(plugin_dir, "none")
    for n in (4, 7, 40):  # 40: split over threads
        grads = train_step(model, n)
        assert sorted(grads) == ["0.bias", "0.kernel", "1.gain", "3.bias", "3.kernel"]
    assert model.weights["1.seen"].any()  # the update went through


@pytest.mark.parametrize("bug, message", [
    # Finding 1: wrong gradient shapes trained silently (or failed in the optimizer naming no layer).
    ("dx of the first image only", "backprop returned an input gradient of shape [1, 3, 4, 4] for an input of shape [4, 3, 4, 4]"),
    ("gradient of shape (1,)", "backprop returned a gradient of 'gain' of shape [1], but the weight's shape is [3]"),
    ("gradient of the wrong rank", "backprop returned a gradient of 'gain' of shape [3, 1], but the weight's shape is [3]"),
    ("gradient of a non-trainable weight", "backprop returned gradients for ['seen'], non-trainable weights (an optimizer would change them); trainable: ['gain']"),
    ("no input gradient", "backprop returned no input gradient (dx None), but ctx.input_grad was True: the layer below needs one of shape [4, 3, 4, 4]"),
    ("update of the wrong shape", "forward reported ctx.update('seen', ...) with shape [1], but the weight's shape is [3]"),
])
def test_a_wrong_gradient_or_update_is_one_line_naming_the_layer(plugin_dir, bug, message):
    model = gain_model(plugin_dir, bug)
    with pytest.raises(LayerError) as err:
        train_step(model)
    assert str(err.value) == f"{WHERE} breaks the layer contract: {message} {BLAME}"


@pytest.mark.parametrize("bug, message", [
    # Finding 2: shape and dtype were checked on the first pass only.
    ("wrong shape on batch 7", "forward (training) returned shape [7, 1, 4, 4], but output_shape([3, 4, 4]) declares [3, 4, 4] per sample ([7, 3, 4, 4] for this batch)"),
    ("float64 after the first pass", "forward (training) turned float32 input into float64; keep the input's dtype (float32 in a model)"),
])
def test_a_late_batch_is_checked_like_the_first(plugin_dir, bug, message):
    model = gain_model(plugin_dir, bug)
    train_step(model, 8)
    train_step(model, 8)
    with pytest.raises(LayerError) as err:
        train_step(model, 7)  # the last, partial batch of an epoch
    assert str(err.value) == f"{WHERE} breaks the layer contract: {message} {BLAME}"
    with pytest.raises(LayerError, match=r"forward \(inference\)"):
        model.predict(np.zeros((7, 1, 6, 6)), preprocessed=True)


def test_split_parts_are_checked_in_their_threads(plugin_dir, monkeypatch, run_all_calls):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    model = gain_model(plugin_dir, "gradient of shape (1,)")
    with pytest.raises(LayerError, match=r"^layers\[1\] .* gradient of 'gain' of shape \[1\]"):
        train_step(model, 40)
    assert 2 in run_all_calls


def test_an_exception_inside_a_plugin_names_the_layer_and_its_distribution(plugin_dir):
    model = gain_model(plugin_dir, "raises after the first training pass")
    train_step(model)
    with pytest.raises(LayerError) as err:
        train_step(model)
    assert str(err.value) == f"{WHERE}: forward (training) raised ZeroDivisionError: the plugin divided by zero {BLAME}"
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    model.predict(np.zeros((2, 1, 6, 6)), preprocessed=True)  # inference does not reach the bug


def test_an_exception_inside_a_builtin_layer_is_called_cnnkits_own_bug(monkeypatch):
    from cnnkit.layers.dense import Dense

    def broken(self, weights, x, ctx):
        raise IndexError("index 3 is out of bounds")

    monkeypatch.setattr(Dense, "forward", broken)
    model = cnnkit.build({"input": {"shape": [4]}, "layers": [{"type": "relu"}, {"type": "dense", "units": 2}]})
    with pytest.raises(LayerError) as err:
        model.predict(np.zeros((3, 4)), preprocessed=True)
    assert str(err.value) == (f"layers[1] (dense from cnnkit {cnnkit.__version__}): forward (inference) raised IndexError: index 3 is out of bounds "
                              f"(a bug in cnnkit {cnnkit.__version__} itself (a built-in layer): please report it)")


def test_a_trainable_weight_reported_as_state_is_refused(plugin_dir):
    model = gain_model(plugin_dir, "update of a trainable weight")
    before = model.weights["1.gain"].copy()
    with pytest.raises(LayerError, match=r"ctx\.update\('gain', \.\.\.\), but 'gain' is a trainable weight; only weights declared trainable=False \('seen'\)"):
        train_step(model)
    np.testing.assert_array_equal(model.weights["1.gain"], before)


def test_a_plugin_bug_in_a_run_is_one_line_with_exit_1(tmp_path, tiny_spec):
    site = tmp_path / "site"
    write_dist(site, "fake-gain", "0.1", {"gain": "fake_gain_mod:Gain"}, {"fake_gain_mod": GAIN.format(bug="raises after the first training pass")})
    spec = json.loads(json.dumps(tiny_spec))
    spec["layers"].insert(1, {"type": "gain"})
    (tmp_path / "gain.json").write_text(json.dumps(spec))
    result = subprocess.run([*CNNKIT, "run", str(tmp_path / "gain.json"), "--quiet", "--out", str(tmp_path / "gain.cnnkit")],
                            env=subprocess_env(site), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and not (tmp_path / "gain.cnnkit").exists()
    assert result.stderr == f"error: {WHERE}: forward (training) raised ZeroDivisionError: the plugin divided by zero {BLAME}\n"
