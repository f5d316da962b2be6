"""The moving average of the weights (spec ``train.ema``): its update sequence by hand and against
torch's AveragedModel, and in training: updated after every step, scored each epoch, kept in the bundle."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import cnnkit
from cnnkit.data import load_fashion_mnist
from cnnkit.errors import SpecError
from cnnkit.spec.training import EmaSpec
from cnnkit.training.ema import WeightAverage, ema_decay
from cnnkit.training.health import TrainingWarning
from cnnkit.training.loop import Hooks, evaluate, fit
from conftest import TINY_SPEC


def snapshots(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Weights as a run would hand them over after each step: a kernel that drifts, and batch norm's statistics."""
    rng = np.random.default_rng(seed)
    start = {"0.kernel": rng.normal(size=(3, 2)).astype(np.float32), "1.running_var": rng.uniform(0.5, 2, 4).astype(np.float32)}
    out = []
    for _ in range(count):
        start = {k: (w + rng.normal(scale=0.3, size=w.shape)).astype(np.float32) for k, w in start.items()}
        out.append(start)
    return out


def test_decay_sequence_by_hand():
    plain = EmaSpec(decay=0.9)
    assert [ema_decay(plain, n) for n in range(4)] == [0.0, 0.9, 0.9, 0.9]  # the first update copies
    warm = EmaSpec(decay=0.9, warmup_power=1.0)  # 1 - 1/(1+n): the plain mean of the weights so far, until 0.9
    assert [ema_decay(warm, n) for n in (0, 1, 2, 3, 9, 10, 50)] == pytest.approx([0.0, 1 / 2, 2 / 3, 3 / 4, 0.9, 0.9, 0.9])
    assert ema_decay(EmaSpec(decay=0.999, warmup_power=2 / 3), 100) == pytest.approx(1 - 101 ** (-2 / 3))  # timm's ModelEmaV3


def test_update_sequence_by_hand():
    weights = snapshots(3)
    average = WeightAverage(EmaSpec(decay=0.9))
    for w in weights:
        average.update(w)
    f = np.float32
    expected = {}
    for name in weights[0]:
        a = weights[0][name].copy()
        for w in weights[1:]:
            a = a + f(0.1) * (w[name] - a)
        expected[name] = a
    assert average.updates == 3
    for name in expected:
        np.testing.assert_array_equal(average.weights[name], expected[name])
    # with warm-up p = 1 the average of three updates is their plain mean (decays 0, 1/2, 2/3)
    mean = WeightAverage(EmaSpec(decay=0.99, warmup_power=1.0))
    for w in weights:
        mean.update(w)
    for name in weights[0]:
        np.testing.assert_allclose(mean.weights[name], np.mean([w[name] for w in weights], axis=0), rtol=1e-6)


@pytest.mark.parametrize("warmup_power", [None, 0.75])
def test_equals_torch_averaged_model_with_an_ema_function(warmup_power):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    spec = EmaSpec(decay=0.95, warmup_power=warmup_power)
    weights = snapshots(40, seed=1)

    class Net(torch.nn.Module):  # a parameter and a buffer, like a layer's kernel and batch norm's running variance
        def __init__(self):
            super().__init__()
            self.kernel = torch.nn.Parameter(torch.zeros(3, 2))
            self.register_buffer("running_var", torch.ones(4))

    def warmed(ema_list, current_list, n_averaged):  # AveragedModel passes how many updates came before
        decay = ema_decay(spec, int(n_averaged))
        torch._foreach_lerp_(ema_list, current_list, 1 - decay)

    net = Net()
    twin = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(spec.decay) if warmup_power is None else warmed, use_buffers=True)
    average = WeightAverage(spec)
    for w in weights:
        with torch.no_grad():
            net.kernel.copy_(torch.from_numpy(w["0.kernel"]))
            net.running_var.copy_(torch.from_numpy(w["1.running_var"]))
        twin.update_parameters(net)
        average.update(w)
    np.testing.assert_allclose(average.weights["0.kernel"], twin.module.kernel.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(average.weights["1.running_var"], twin.module.running_var.numpy(), rtol=1e-6, atol=1e-6)


def ema_spec(synthetic_dir, **ema) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["layers"][1:1] = [{"type": "batchnorm2d"}]
    spec["data"]["dir"] = str(synthetic_dir)
    spec["train"].update(epochs=2, batch_size=32, optimizer={"type": "adam", "lr": 0.01}, ema=ema or {"decay": 0.9})
    return spec


class Recorder(Hooks):
    """The model's weights after every optimizer step (the NumPy stepper trains them in place)."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def should_stop(self, state) -> bool:
        self.steps.append({k: w.copy() for k, w in self.model.weights.items()})
        return False


def test_training_averages_every_step_scores_the_average_and_keeps_it(synthetic_dir):
    spec = ema_spec(synthetic_dir, decay=0.9, warmup_power=0.75)
    data = load_fashion_mnist(synthetic_dir)
    model = cnnkit.build(spec)
    recorder = Recorder(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        history = fit(model, data, hooks=recorder)
    by_hand = WeightAverage(model.spec.train.ema)
    for w in recorder.steps:
        by_hand.update(w)
    assert by_hand.updates == 2 * 8  # 240 images in batches of 32, two epochs
    for name, w in model.weights.items():  # the average, running statistics included, is what the model keeps
        np.testing.assert_array_equal(w, by_hand.weights[name])
    assert not np.array_equal(model.weights["0.kernel"], recorder.steps[-1]["0.kernel"])  # not the last step's weights
    final = evaluate(model, data.test_images, data.test_labels)
    assert history[-1].test_accuracy == final["accuracy"]  # the epoch was scored with the average


def test_bundle_bytes_change_only_when_ema_is_asked_for(synthetic_dir):
    from cnnkit.bundle import encode

    spec = ema_spec(synthetic_dir)
    plain = copy.deepcopy(spec)
    del plain["train"]["ema"]
    assert "ema" not in cnnkit.validate_spec(plain).to_dict()["train"]  # specs without it keep their bundle bytes
    data = load_fashion_mnist(synthetic_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)
        assert encode(cnnkit.train(spec, data)) == encode(cnnkit.train(spec, data))  # reruns: the same bytes
        assert encode(cnnkit.train(plain, data)) != encode(cnnkit.train(spec, data))


@pytest.mark.parametrize("ema, fragment", [
    ({"decay": 1.0}, "train.ema.decay: input should be less than 1"),
    ({"decay": 0.99, "warmup_power": 0}, "train.ema.warmup_power: input should be greater than 0"),
    ({"decay": 0.99, "warm_up": 1}, "train.ema.warm_up: unknown field; did you mean 'warmup_power'?"),
])
def test_bad_ema_settings_are_spec_errors(ema, fragment, synthetic_dir):
    with pytest.raises(SpecError) as info:
        cnnkit.validate_spec(ema_spec(synthetic_dir, **ema))
    assert fragment in str(info.value)


def test_resume_may_change_the_decay_but_not_whether_there_is_an_average(synthetic_dir, tmp_path):
    from cnnkit.errors import CnnkitError
    from cnnkit.training.loop import Interrupted
    from cnnkit.training.resume import resume_run
    from test_runs import run_in_folder

    data = load_fashion_mnist(synthetic_dir)
    plain = ema_spec(synthetic_dir)
    del plain["train"]["ema"]
    for spec, change, verb in ((ema_spec(synthetic_dir), "train.ema=null", "removed"), (plain, 'train.ema={"decay": 0.9}', "added")):
        with pytest.raises(Interrupted):
            run_in_folder(spec, data, tmp_path / verb, stop_at=5)
        with pytest.raises(CnnkitError, match=f"cannot resume .* with train.ema {verb}: the run"):
            resume_run(tmp_path / verb / "tiny", [change])
    model, state = resume_run(tmp_path / "removed" / "tiny", ["train.ema.decay=0.5"])
    assert state.ema.updates == 5 and state.ema.spec.decay == 0.5 and set(state.ema.weights) == set(model.weights)


def test_a_run_whose_average_is_at_chance_says_the_average_may_lag():
    """Scored with a slow average (about 1,000 steps) after a short run, a model may look untrained
    because of the average, not because nothing was learned: the chance-level warning says so."""
    from cnnkit.training.history import EpochRecord, History
    from cnnkit.training.loop import _health

    history = History([EpochRecord(epoch=1, train_loss=0.5, test_accuracy=0.1, test_macro_f1=0.02, lr=0.01, seconds=1.0)])
    labels = np.arange(200) % 10
    plain, = _health(history, 2.3, 10, labels, None)
    assert plain.endswith("the model learned nothing useful")
    averaged_run, = _health(history, 2.3, 10, labels, None, EmaSpec(decay=0.999))
    assert averaged_run == (plain + ", or train.ema's average (decay 0.999: about the last 1,000 steps) still lags the "
                            "training: for a short run lower the decay or set warmup_power")


@pytest.mark.parametrize("value", [0.999, True])
def test_ema_that_is_not_an_object_is_named_without_pydantic_class_names(value, synthetic_dir):
    spec = ema_spec(synthetic_dir)
    spec["train"]["ema"] = value
    with pytest.raises(SpecError) as info:
        cnnkit.validate_spec(spec)
    assert str(info.value) == f"train.ema: input should be an object ({{...}}). Received: {str(value).lower()}"
