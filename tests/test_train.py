"""Training: it learns, it is reproducible from the seed, and it beats chance on real Fashion-MNIST."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import cnnkit
from cnnkit import DataError
from cnnkit.data import Dataset, load_fashion_mnist
from cnnkit.runtime.losses import softmax_cross_entropy
from cnnkit.optim import SGD
from cnnkit.training import TrainingWarning, evaluate, fit, training_metadata
from cnnkit.training.health import chance_warning, loss_growth_warning
from conftest import REAL_DATA, SEED_SPEC, TINY_SPEC, synthetic_images


def tiny_data(train=240, test=100) -> Dataset:
    x, y = synthetic_images(train, 1)
    xt, yt = synthetic_images(test, 2)
    return Dataset(x, y.astype(np.int64), xt, yt.astype(np.int64), [f"c{i}" for i in range(10)], "synthetic")


def spec_with(**train) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["train"].update(train)
    return spec


def test_loss_goes_down_and_accuracy_goes_up():
    epochs = []
    model = cnnkit.train(spec_with(epochs=4), tiny_data(), on_epoch=epochs.append)
    losses = [r.train_loss for r in epochs]
    assert [r.epoch for r in epochs] == [1, 2, 3, 4]
    assert losses[-1] < 0.5 * losses[0]
    assert epochs[-1].test_accuracy > 0.9 and epochs[-1].test_macro_f1 > 0.9
    assert model.classes == [f"c{i}" for i in range(10)]
    assert model.metadata["metrics"] == {"test_accuracy": epochs[-1].test_accuracy, "test_macro_f1": epochs[-1].test_macro_f1}


def test_same_seed_gives_identical_weights_other_seed_does_not():
    data = tiny_data()
    a = cnnkit.train(spec_with(epochs=2, seed=3), data)
    b = cnnkit.train(spec_with(epochs=2, seed=3), data)
    c = cnnkit.train(spec_with(epochs=2, seed=4), data)
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name])
    assert any(not np.array_equal(a.weights[n], c.weights[n]) for n in a.weights)
    assert a.metadata == b.metadata


def test_shuffle_order_matters_and_can_be_turned_off():
    data = tiny_data()
    shuffled = cnnkit.train(spec_with(epochs=1), data)
    in_order = cnnkit.train(spec_with(epochs=1, shuffle=False), data)
    assert any(not np.array_equal(shuffled.weights[n], in_order.weights[n]) for n in shuffled.weights)


def test_batch_size_one_and_adam_train():
    data = tiny_data(train=60, test=20)
    steps = []
    model = cnnkit.train(spec_with(epochs=1, batch_size=1, optimizer={"type": "adam", "lr": 0.001}), data,
                         on_step=lambda *a: steps.append(a))
    assert len(steps) == 60 and steps[-1][:3] == (1, 60, 60)
    assert np.isfinite(model.metadata["history"][0]["train_loss"])


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_step_callback_counts_examples_with_a_short_last_batch():
    steps = []
    cnnkit.train(spec_with(epochs=1, batch_size=16), tiny_data(train=40, test=10), on_step=lambda *a: steps.append(a[:3]))
    assert steps == [(1, 16, 40), (1, 32, 40), (1, 40, 40)]


def test_labels_outside_the_model_outputs_are_data_errors():
    data = tiny_data(train=20, test=10)
    bad = Dataset(data.train_images, np.full(20, 10), data.test_images, data.test_labels, data.classes, "bad")
    with pytest.raises(DataError, match="train labels range over 10..10, but the model has 10 outputs"):
        cnnkit.train(spec_with(epochs=1), bad)


def test_outputs_that_do_not_match_the_dataset_classes_fail_before_training():
    data = tiny_data(train=20, test=10)
    fewer = Dataset(data.train_images, data.train_labels % 5, data.test_images, data.test_labels % 5, data.classes[:5], "five")
    with pytest.raises(DataError, match="the model has 10 outputs but the dataset has 5 classes"):
        cnnkit.train(spec_with(epochs=1), fewer)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float32 overflow on the way to the error
def test_divergence_is_reported():
    with pytest.raises(DataError, match="diverged"):
        cnnkit.train(spec_with(epochs=1, optimizer={"type": "sgd", "lr": 1e30}), tiny_data(train=64, test=10))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_loss_stops_training_at_its_step():
    data = tiny_data()
    spec = spec_with(epochs=2, batch_size=4, optimizer={"type": "sgd", "lr": 1000.0})
    # The oracle: the same steps by hand, up to the first batch whose loss is not finite.
    model = cnnkit.build(spec)
    optimizer = SGD(SGD.Params(lr=1000.0), model.weights)
    x, order = model.preprocess(data.train_images), np.random.default_rng(0).permutation(240)
    with np.errstate(all="ignore"):
        for step in range(1, 61):
            idx = order[(step - 1) * 4 : step * 4]
            logits, backprop = model.forward(x[idx], train=True, logits=True)
            loss, dlogits = softmax_cross_entropy(logits, data.train_labels[idx].astype(np.int64))
            if not np.isfinite(loss):
                break
            optimizer.step(model.weights, backprop(dlogits))
    assert 1 < step < 60
    steps = []
    with pytest.raises(DataError) as caught:
        cnnkit.train(spec, data, on_step=lambda *a: steps.append(a))
    assert str(caught.value) == f"training diverged at epoch 1, step {step} of 60: the loss is nan (lr 1000); lower train.optimizer.lr"
    assert len(steps) == step - 1 and all(np.isfinite(s[3]) for s in steps)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_loss_that_is_not_finite_before_any_update_does_not_blame_the_learning_rate():
    spec = spec_with(epochs=1)
    spec["layers"][0]["init_std"] = spec["layers"][4]["init_std"] = 1e30  # logits overflow: inf - inf
    with pytest.raises(DataError, match="step 1 of 15: the loss is nan before any weight update; check input.preprocess"):
        cnnkit.train(spec, tiny_data())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_loss_that_grows_ends_with_warnings():
    spec = spec_with(epochs=2, batch_size=16, optimizer={"type": "sgd", "lr": 1000.0})
    with pytest.warns(TrainingWarning) as caught:
        model = cnnkit.train(spec, tiny_data())
    messages = [str(w.message) for w in caught]
    assert messages == model.metadata["warnings"] and len(messages) == 2
    assert messages[0].startswith("the training loss grew from 2.3") and "lower train.optimizer.lr" in messages[0]
    assert messages[1].startswith("the final test accuracy 0.1200 is at chance level")


def test_health_thresholds():
    assert loss_growth_warning(2.3, 22.0, 10) is None and loss_growth_warning(2.3, 24.0, 10) is not None
    assert loss_growth_warning(0.01, 1.0, 10) is None  # measured from ln(10) when the first loss is lower
    labels = np.repeat(np.arange(10), 100)  # chance 0.1, two standard errors 0.019
    assert chance_warning(0.118, labels, "test") is not None and chance_warning(0.12, labels, "test") is None
    assert chance_warning(float("nan"), labels, "test") is None
    assert chance_warning(1.0, np.zeros(50, np.int64), "test") is None  # one class: nothing to tell apart


def test_a_healthy_run_has_no_warnings(recwarn):
    model = cnnkit.train(spec_with(epochs=3), tiny_data())
    assert "warnings" not in model.metadata and not [w for w in recwarn if w.category is TrainingWarning]


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_training_metadata_has_no_wall_clock_times():
    data = tiny_data(train=32, test=16)
    model = cnnkit.build(spec_with(epochs=1))
    history = fit(model, data)
    meta = training_metadata(model, data, history)
    assert meta["train_examples"] == 32 and meta["test_examples"] == 16 and meta["seed"] == 0
    assert "seconds" not in meta["history"][0] and history[0].seconds >= 0
    json.dumps(meta)  # plain data


def test_evaluate_matches_predict(monkeypatch):
    from cnnkit.training import loop

    model = cnnkit.train(spec_with(epochs=2), tiny_data())
    x, y = synthetic_images(50, 5)
    scores = evaluate(model, x, y)
    assert scores["accuracy"] == float(np.mean(model.predict(x) == y))
    monkeypatch.setattr(loop, "EVAL_CHUNK", 7)  # 50 images in chunks of 7: the chunks are joined in order
    assert evaluate(model, x, y) == scores
    assert evaluate(model, x[:0], y[:0])["accuracy"] == 0.0  # no images: no chunks, no error


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_train_reads_the_spec_data_dir(tiny_spec):
    tiny_spec["data"].update(train_limit=50, test_limit=20)
    model = cnnkit.train(tiny_spec)
    assert model.metadata["train_examples"] == 50 and model.metadata["test_examples"] == 20
    assert model.classes[0] == "T-shirt/top"


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_seed_architecture_beats_chance_on_real_fashion_mnist():
    spec = json.loads(SEED_SPEC.read_text())
    spec["data"].update(dir=str(REAL_DATA), train_limit=2000, test_limit=1000)
    spec["train"].update(epochs=1, batch_size=16, optimizer={"type": "sgd", "lr": 0.05})
    data = load_fashion_mnist(REAL_DATA, 2000, 1000, verify=True)
    model = cnnkit.train(spec, data)
    metrics = model.metadata["metrics"]
    assert metrics["test_accuracy"] > 0.6, metrics  # chance is 0.1
    assert metrics["test_macro_f1"] > 0.5, metrics


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_each_training_step_gets_its_own_key_for_random_layers(monkeypatch):
    from cnnkit.runtime.model import Model

    keys = []
    original = Model.forward

    def spy(self, x, train=False, logits=False, *, key=None):
        if train:
            keys.append(key)
        return original(self, x, train, logits, key=key)

    monkeypatch.setattr(Model, "forward", spy)
    cnnkit.train(spec_with(epochs=2, batch_size=16), tiny_data(train=40, test=10))
    assert keys == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_a_dropout_model_trains_reproducibly(tmp_path):
    spec = spec_with(epochs=2)
    spec["layers"].insert(4, {"type": "dropout", "rate": 0.3})
    data = tiny_data()
    a = cnnkit.train(spec, data).save(tmp_path / "a.cnnkit").read_bytes()
    assert a == cnnkit.train(spec, data).save(tmp_path / "b.cnnkit").read_bytes()


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_adam_at_lr_1e6_on_real_fashion_mnist_ends_with_both_warnings():
    spec = json.loads(SEED_SPEC.read_text())
    spec["data"].update(dir=str(REAL_DATA), train_limit=1000, test_limit=500)
    spec["train"].update(epochs=1, batch_size=16, optimizer={"type": "adam", "lr": 1e6})
    with pytest.warns(TrainingWarning) as caught:
        model = cnnkit.train(spec, load_fashion_mnist(REAL_DATA, 1000, 500))
    messages = [str(w.message) for w in caught if w.category is TrainingWarning]
    assert len(messages) == 2 and "training loss grew" in messages[0] and "at chance level" in messages[1]
    assert model.metadata["warnings"] == messages


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_augmentation_and_validation_on_real_fashion_mnist():
    spec = json.loads(SEED_SPEC.read_text())
    spec["data"].update(dir=str(REAL_DATA), train_limit=2400, test_limit=1000, validation=0.1,
                        augment={"crop_padding": 2, "hflip": True, "erasing": {"p": 0.25}})
    spec["train"].update(epochs=2, batch_size=16, optimizer={"type": "adam", "lr": 0.002}, early_stopping={"patience": 1})
    model = cnnkit.train(spec, load_fashion_mnist(REAL_DATA, 2400, 1000))
    meta = model.metadata
    assert meta["train_examples"] == 2160 and meta["validation"]["examples"] == 240
    assert all(r["val_accuracy"] > 0.5 for r in meta["history"]), meta["history"]  # chance is 0.1
    assert meta["metrics"]["test_accuracy"] > 0.6 and "warnings" not in meta, meta
