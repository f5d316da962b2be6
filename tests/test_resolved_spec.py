"""A spec is resolved once: validation gives the frozen ModelSpec that the model, the trainer, the data
loaders and save all take, and a bundle is read back resolving only what inference needs."""

from __future__ import annotations

import json
from collections import Counter

import msgpack
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data.sources import DATASETS
from cnnkit.data.sources.fashion_mnist import FashionMNIST
from cnnkit.optim import Adam
from cnnkit.optim.schedules import Cosine
from cnnkit.plugins import registry
from test_bundle import payload_of, repack

runner = CliRunner()


def _count_calls(monkeypatch, counts: Counter, owner, name: str, label) -> None:
    """Count each call of ``owner.name`` under ``label(args)`` (a class method stays a class method)."""
    real = getattr(owner, name)
    is_classmethod = isinstance(owner, type) and isinstance(owner.__dict__.get(name), classmethod)

    def counted(*args, **kwargs):
        counts[label(args)] += 1
        return real(*args[1:] if is_classmethod else args, **kwargs)

    monkeypatch.setattr(owner, name, classmethod(counted) if is_classmethod else counted)


def test_a_run_resolves_its_spec_once(tiny_spec, tmp_path, monkeypatch):
    """`cnnkit run`, with a best.cnnkit saved per improving epoch and a final bundle: every layer type,
    the data source and the optimizer's and schedule's params are looked up and validated once."""
    tiny_spec["data"]["validation"] = 40  # a best.cnnkit each improving epoch, a save more to count
    tiny_spec["train"].update(epochs=2, optimizer={"type": "adam", "lr": 0.01}, schedule={"type": "cosine", "warmup_steps": 2})
    (tmp_path / "tiny.json").write_text(json.dumps(tiny_spec))
    counts: Counter = Counter()
    _count_calls(monkeypatch, counts, registry, "load", lambda args: f"layer {args[0]}")
    _count_calls(monkeypatch, counts, DATASETS, "load", lambda args: f"source {args[0]}")
    for params in (Adam.Params, Cosine.Params, FashionMNIST.Params):
        _count_calls(monkeypatch, counts, params, "model_validate", lambda args, params=params: params.__qualname__)

    result = runner.invoke(app, ["run", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "tiny.cnnkit"), "--run-dir", str(tmp_path / "runs"), "-q"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "tiny" / "best.cnnkit").is_file()
    layers = Counter(f"layer {layer['type']}" for layer in tiny_spec["layers"])
    assert counts == layers + Counter({"source fashion-mnist": 1, "Adam.Params": 1, "Cosine.Params": 1, "FashionMNIST.Params": 1})


def test_the_resolved_spec_is_frozen_and_typed(tiny_spec):
    spec = cnnkit.validate_spec({**tiny_spec, "train": {**tiny_spec["train"], "schedule": {"type": "cosine"}}})
    assert (spec.train.optimizer.type, spec.train.optimizer.lr, type(spec.train.schedule)) == ("sgd", 0.1, Cosine.Params)
    assert isinstance(spec.data.source, FashionMNIST.Params) and spec.data.source_class is FashionMNIST
    assert [r.type for r in spec.layers][:2] == ["conv2d", "relu"] and spec.layers[0].params.filters == 4
    model = cnnkit.Model(spec)
    assert model.spec is spec and model.layers is spec.layers  # taken, not resolved again
    with pytest.raises(AttributeError, match="a ModelSpec is frozen"):
        spec.name = "other"
    with pytest.raises(Exception, match="frozen"):
        spec.train.epochs = 9
    assert cnnkit.validate_spec(spec.to_dict()) == spec


def _foreign_training_section(tmp_path, tiny_spec):
    """A bundle whose train section another cnnkit wrote: an optimizer and a key this one does not know."""
    model = cnnkit.build(tiny_spec)
    payload = payload_of(cnnkit.bundle.encode(model))
    payload["spec"]["train"]["optimizer"] = {"type": "lion", "lr": 0.0003, "betas": [0.9, 0.99]}
    payload["spec"]["train"]["ema_decay"] = 0.999
    path = tmp_path / "foreign.cnnkit"
    path.write_bytes(repack(payload))
    return model, path


def test_predict_does_not_validate_the_training_section(tmp_path, tiny_spec):
    model, path = _foreign_training_section(tmp_path, tiny_spec)
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)

    result = runner.invoke(app, ["predict", str(path), str(image), "--json"])

    assert result.exit_code == 0, result.output
    loaded = cnnkit.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(np.zeros((2, 28, 28))), model.predict_proba(np.zeros((2, 28, 28))))
    assert json.loads(result.stdout)[0]["top"][0]["probability"] == pytest.approx(float(model.predict_proba(np.full((28, 28), 200)).max()))
    # Kept as written: saving the loaded model gives the same bytes back.
    assert loaded.save(tmp_path / "again.cnnkit").read_bytes() == path.read_bytes()
    assert loaded.spec.to_dict()["train"]["optimizer"]["type"] == "lion"
    # Asked for, the training section is resolved then, and says what this cnnkit cannot use.
    with pytest.raises(cnnkit.SpecError, match=r"^train\.optimizer\.type: expected one of 'sgd', 'adam', 'adamw'\. Received: \"lion\""):
        loaded.spec.train
    assert loaded.spec.data.dataset == "fashion-mnist"


def test_resume_refuses_a_checkpoint_whose_training_section_it_cannot_use(tmp_path, spec_file):
    """A checkpoint trains on, so reading one resolves its whole spec: a foreign train section is a one-line error."""
    runs = tmp_path / "runs"
    assert runner.invoke(app, ["run", str(spec_file), "--out", str(tmp_path / "a.cnnkit"), "--run-dir", str(runs), "-q"]).exit_code == 0
    last = runs / "tiny" / "last.cnnkit"
    outer = msgpack.unpackb(last.read_bytes())
    payload = msgpack.unpackb(outer["payload"])
    payload["spec"]["train"]["optimizer"]["type"] = "lion"
    last.write_bytes(repack(payload, version=outer["version"]))

    result = runner.invoke(app, ["run", "--resume", str(runs / "tiny"), "--out", str(tmp_path / "b.cnnkit")])

    assert result.exit_code == 1
    assert result.output.strip() == f"error: {last}: embedded spec is invalid: train.optimizer.type: expected one of 'sgd', 'adam', 'adamw'. Received: \"lion\""
