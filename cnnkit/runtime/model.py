"""Model: the layers of a validated spec plus their named weights, run forward and backward over batches."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import allocator, guard, inputs, parallel, tuning
from ..errors import BundleError, CnnkitError, DataError, DataWarning
from ..layers.base import Context
from .losses import softmax
from .tta import black_value, mean_probabilities
from ..spec import ModelSpec, ResolvedLayer, validate_spec


# The key random layers get in training when Model.forward is called without one.
TRAIN_KEY = (0, 0)

# The smallest part of a batch worth a thread of its own: below it, handing work to a thread costs
# more than it saves (seed net, 2 threads: batch 16 trained at 6.0k img/s whole, 4.9k split in two).
MIN_PART = 16


def plan_module():
    """``cnnkit.runtime.plan``, imported on first use: it imports the built-in layers, and
    ``import cnnkit`` loads no layer."""
    from . import plan

    return plan


def _no_backprop(dy: np.ndarray) -> dict[str, np.ndarray]:
    raise CnnkitError("backprop needs a forward pass with train=True (inference keeps no layer inputs)")


def _check_key(key: Any) -> tuple[int, int]:
    if key is None:
        return TRAIN_KEY
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 0 for k in key)):
        raise CnnkitError(f"key must be a tuple (epoch, step) of two non-negative integers. Received: {key!r}")
    return (int(key[0]), int(key[1]))


class Model:
    """A network built from a spec. ``weights`` maps dotted names (``"0.kernel"``) to float32 arrays.

    Learned state lives in ``weights``; ``classes`` names the outputs; ``metadata`` carries training
    history and metrics (what a bundle stores besides the spec).
    """

    def __init__(
        self,
        spec: ModelSpec | dict[str, Any],
        weights: dict[str, np.ndarray] | None = None,
        *,
        classes: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.spec = spec if isinstance(spec, ModelSpec) else validate_spec(spec)
        self.layers: tuple[ResolvedLayer, ...] = self.spec.layers
        self.weights: dict[str, np.ndarray] = weights if weights is not None else self.init_weights(self.spec.train.seed)
        self._check_weights()
        outputs = self.output_shape[-1]
        self.classes = list(classes) if classes is not None else [str(i) for i in range(outputs)]
        if len(self.classes) != outputs:
            raise CnnkitError(f"{len(self.classes)} class names for a model with {outputs} outputs")
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._bind()

    # -- structure ----------------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.input.shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].output_shape

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{r.index}.{name}": tuple(w.shape) for r in self.layers for name, w in r.layer.weights(r.input_shape).items()}

    def init_weights(self, seed: int) -> dict[str, np.ndarray]:
        """Fresh weights from ``seed``: each layer draws from its own stream, so layers don't shift each other."""
        weights = {}
        for r in self.layers:
            rng = np.random.default_rng([seed, r.index])
            for name, array in r.layer.initial_weights(r.input_shape, rng).items():
                weights[f"{r.index}.{name}"] = np.ascontiguousarray(array, dtype=np.float32)
        return weights

    def _check_weights(self) -> None:
        expected = self.weight_shapes()
        missing = [n for n in expected if n not in self.weights]
        extra = [n for n in self.weights if n not in expected]
        if missing or extra:  # at most 10 names each: a hostile bundle may carry thousands
            raise CnnkitError(f"weights do not match the spec: missing {missing[:10]}, unexpected {extra[:10]}")
        for name, shape in expected.items():
            if tuple(self.weights[name].shape) != shape:
                raise CnnkitError(f"weight {name!r} has shape {list(self.weights[name].shape)}, the spec needs {list(shape)}")

    def _bind(self) -> None:
        """Per-layer views of the flat weight dict (same arrays), and the gradient key names."""
        self._layer_weights = []
        self._grad_keys = []
        for r in self.layers:
            described = r.layer.weights(r.input_shape)
            self._layer_weights.append({name: self.weights[f"{r.index}.{name}"] for name in described})
            self._grad_keys.append({name: f"{r.index}.{name}" for name in described})
        # Each layer's forward, checked against its declared shapes at every step (cnnkit.runtime.guard).
        self._forwards = guard.guarded_forwards(self.layers)
        # Backprop stops at the first layer with weights: nothing below it needs a gradient, and
        # that layer's context says (ctx.input_grad False) that it may skip its input gradient.
        trainable = [i for i, names in enumerate(self._grad_keys) if names]
        self._first_trainable = trainable[0] if trainable else len(self.layers)
        from ..layers.activations import Softmax  # here, not at the top: `import cnnkit` loads no layer

        self.ends_with_softmax = isinstance(self.layers[-1].layer, Softmax)
        # A training batch may be split over threads only if no layer needs it whole (a final
        # softmax skipped for the loss is a built-in, which is per-sample).
        self._splits_in_training = all(r.layer.batch_coupling != "whole" for r in self.layers)
        self._started = False
        self._plans: dict = {}


    # -- running ------------------------------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = False, logits: bool = False, *, key: tuple[int, int] | None = None) -> tuple[np.ndarray, Callable[[np.ndarray], dict[str, np.ndarray]]]:
        """Run the batch ``x`` (N, *input_shape) through the layers.

        With ``logits=True`` a final softmax layer is skipped, so a loss can work from logits.
        Returns ``(y, backprop)``; ``backprop(dy)`` returns the gradient of every weight by name.
        With ``train=False`` there is no backprop (calling it raises): inference keeps no layer's
        input once the next layer has run, so its memory does not grow with depth.

        ``key=(epoch, step)`` (non-negative ints) seeds the random layers in training: a layer's
        ``ctx.rng`` is ``np.random.default_rng([train.seed, epoch, step, layer_index, part_index])``. The training loop passes it; without it, training uses the fixed key
        ``TRAIN_KEY`` = (0, 0), so such calls are reproducible but draw the same masks every time.
        Inference passes no generator.

        A batch of at least ``2 * MIN_PART`` samples is split into one part per thread
        (``cnnkit.runtime.parallel``), each run through all layers on its own core; backprop sums the parts'
        gradients. Inference always splits: every layer's samples are independent there (the layer
        contract, checked by ``check_layer``). Training splits only when every layer is
        ``"per_sample"`` or ``"per_part"`` in its ``batch_coupling`` (batch norm: per-part statistics).
        State updates (running statistics) the layers report are applied after all parts finish,
        in part order (see cnnkit.layers.base).
        """
        key = _check_key(key) if train else None
        if not self._started:  # once per model
            tuning.check_environment()
            allocator.keep_freed_memory()  # once per process (see cnnkit.runtime.allocator)
            self._started = True
        count = len(self.layers) - 1 if logits and self.ends_with_softmax else len(self.layers)
        parts = self._parts(len(x), train)
        tasks = [functools.partial(self._forward_part, x[lo:hi], train, count, key, part) for part, (lo, hi) in enumerate(parts)]
        with parallel.single_threaded_blas():  # cnnkit splits the work itself (see cnnkit.runtime.parallel)
            results = parallel.run_all(tasks) if len(tasks) > 1 else [tasks[0]()]
        y = results[0][0] if len(results) == 1 else np.concatenate([part_y for part_y, _, _ in results])
        part_backprops = [part_backprop for _, part_backprop, _ in results]  # not the parts' outputs: y holds them
        if train:
            self._apply_updates([part_updates for _, _, part_updates in results], [hi - lo for lo, hi in parts])
        if not train:
            return y, _no_backprop
        shape = y.shape

        def backprop(dy: np.ndarray) -> dict[str, np.ndarray]:
            if np.shape(dy) != shape:
                raise CnnkitError(f"backprop needs a gradient of the output's shape {list(shape)}. Received: {list(np.shape(dy))}")
            tasks = [functools.partial(part_backprop, dy[lo:hi]) for (lo, hi), part_backprop in zip(parts, part_backprops)]
            with parallel.single_threaded_blas():
                grads, *others = parallel.run_all(tasks) if len(tasks) > 1 else [tasks[0]()]
            for other in others:
                for name, g in other.items():
                    grads[name] = grads[name] + g
            return grads

        return y, backprop

    def _parts(self, n: int, train: bool) -> list[tuple[int, int]]:
        """Sample ranges [lo, hi) to run in parallel: one per thread, at least MIN_PART samples each."""
        threads = min(parallel.num_threads(), n // MIN_PART)
        if threads < 2 or (train and not self._splits_in_training):
            return [(0, n)]
        bounds = [n * i // threads for i in range(threads + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    def steps(self, count: int | None = None, train: bool = True) -> list:
        """How the first ``count`` layers (default all) run: ``cnnkit.runtime.plan`` steps, one per
        layer or a fused run of built-in layers."""
        count = len(self.layers) if count is None else count
        key = (count, train, tuning.fusion_enabled())
        if key not in self._plans:
            self._plans[key] = plan_module().plan(self.layers[:count], train)
        return self._plans[key]

    def run_step(self, step, x: np.ndarray, train: bool, key: tuple[int, int] = TRAIN_KEY, part: int = 0):
        """One step of ``steps()`` on x: (y, backprop, updates), as ``cnnkit.runtime.plan.run``
        returns them (``tools/bench.py --profile`` times steps one by one this way)."""
        if not train:
            return plan_module().run(self.layers, self._layer_weights, step, x, None, self._forwards)
        seed = self.spec.train.seed

        def ctx_for(i):
            return Context(True, seed=[seed, *key, self.layers[i].index, part], input_grad=i != self._first_trainable)

        return plan_module().run(self.layers, self._layer_weights, step, x, ctx_for, self._forwards)

    def _forward_part(self, x: np.ndarray, train: bool, count: int, key: tuple[int, int] | None, part: int):
        """One part through the layers: (y, backprop, {layer index: state updates it reported})."""
        if not train:
            return self._infer_part(x, count), _no_backprop, {}
        backprops, updates = [], {}
        for step in self.steps(count, True):
            x, bp, reported = self.run_step(step, x, True, key, part)
            backprops.append((step, bp))
            updates.update(reported)

        def backprop(dy: np.ndarray) -> dict[str, np.ndarray]:
            grads = {}
            for step, bp in reversed(backprops):
                if step.indices[-1] < self._first_trainable:
                    break
                dy, step_grads = bp(dy)
                for i, layer_grads in step_grads:
                    keys = self._grad_keys[i]
                    for name, g in layer_grads.items():
                        grads[keys[name]] = g
            return grads

        return x, backprop, updates

    def _apply_updates(self, part_updates: list[dict[int, dict[str, np.ndarray]]], sizes: list[int]) -> None:
        """Write the state the layers reported into their weights (in place: optimizers and the
        per-layer views share these arrays). Several parts' values are averaged, weighted by their
        sample counts and summed in part order, so the result depends on the thread count only. (The
        guard checked each part's names and shapes before anything is written.)"""
        total = sum(sizes)  # several parts: each has at least MIN_PART samples
        for i, reported in part_updates[0].items():
            for name in reported:
                target = self._layer_weights[i][name]
                if len(sizes) == 1:
                    target[...] = reported[name]
                    continue
                mean = np.zeros(target.shape)
                for updates, n in zip(part_updates, sizes):
                    mean += (n / total) * np.asarray(updates[i][name], np.float64)
                target[...] = mean

    def _infer_part(self, x: np.ndarray, count: int) -> np.ndarray:
        """Inference frees as it goes: each step's output replaces its input at once, so peak memory
        is about the two largest adjacent activations, whatever the depth."""
        for step in self.steps(count, False):
            x = self.run_step(step, x, False)[0]
        return x

    def preprocess(self, images: np.ndarray, preprocessed: bool = False) -> np.ndarray:
        """Raw images -> float32 model input of shape (N, *input_shape).

        Accepts (N, C, H, W), for grayscale also (N, H, W), and channels last (N, H, W, C) (see
        cnnkit.runtime.inputs), or a single image without N, of raw pixel values, uint8 or float, and
        applies the spec's preprocessing (x / divide - subtract). Pass ``preprocessed=True`` for
        arrays already in model units.
        """
        x = np.asarray(images)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"images must be a numeric array. Received: dtype={x.dtype}")
        received = list(x.shape)
        x = inputs.as_batch(x, self.input_shape)
        if x.dtype.kind in "fc" and not np.isfinite(x).all():  # NaN in, NaN probabilities out, silently
            raise DataError(f"images must hold finite values. Received: NaN or infinity in an array of shape {received}")
        x = x.astype(np.float32, order="C")  # channels-last input arrives as a strided view
        if not preprocessed:
            p = self.spec.input.preprocess
            x /= np.float32(p.divide)
            x -= np.float32(p.subtract)
        return x

    def predict_proba(self, images: np.ndarray, batch_size: int = 256, preprocessed: bool = False, tta: bool = True) -> np.ndarray:
        """Class probabilities, (N, classes), each row summing to 1.

        With the spec's test-time augmentation (``predict.tta``) they are the mean over the views of
        each image (cnnkit/runtime/tta.py); ``tta=False`` classifies the images alone. Float images
        of raw pixels that look scaled to 0..1 already, while the spec divides by 255, give a
        DataWarning (they would be answered at chance level, silently).
        """
        if not isinstance(tta, (bool, np.bool_)):  # tta="hflip" would read as True and apply every view
            raise CnnkitError(f"tta must be True (the bundle's own predict.tta: {list(self.spec.predict.tta)}) or False (the images alone). Received: {tta!r}")
        if not preprocessed:
            problem = inputs.prescaled_warning(np.asarray(images), self.spec.input.preprocess.divide)
            if problem:
                warnings.warn(DataWarning(problem), stacklevel=2)
        x = self.preprocess(images, preprocessed)
        out = np.empty((len(x), self.output_shape[-1]), np.float32)
        augment = self.spec.predict if tta and self.spec.predict.tta else None
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            if augment is None:
                out[start : start + batch_size] = softmax(self.logits(batch))
            else:
                out[start : start + batch_size] = mean_probabilities(self.logits, batch, augment, self.black_value)
        return out

    def predict(self, images: np.ndarray, batch_size: int = 256, preprocessed: bool = False, tta: bool = True) -> np.ndarray:
        """Predicted class indices, (N,) (with the spec's test-time augmentation unless ``tta=False``)."""
        return self.predict_proba(images, batch_size, preprocessed, tta).argmax(axis=1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference logits (N, classes) of the preprocessed batch ``x`` (a final softmax layer skipped)."""
        logits, _ = self.forward(x, train=False, logits=True)
        return logits.reshape(len(logits), -1)

    @property
    def black_value(self) -> float:
        """The model value of a raw 0 (black) pixel: what crops and shifts let flow in."""
        p = self.spec.input.preprocess
        return black_value(p.divide, p.subtract)

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write this model as one bundle file (atomically). An existing bundle is replaced; any
        other file, or a read-only one, only with ``force=True``."""
        from ..bundle import save

        return save(self, path, force=force)

    def __repr__(self) -> str:
        return f"Model({self.spec.name!r}, layers={len(self.layers)}, params={sum(w.size for w in self.weights.values())})"


def load(path: str | Path, *, allow_provider_mismatch: bool = False) -> Model:
    """Load a bundle file as a ready-to-predict Model (``cnnkit.load``). Raises BundleError for anything wrong."""
    from ..bundle import read

    return model_from_bundle(read(path), str(path), allow_provider_mismatch=allow_provider_mismatch)


def model_from_bundle(bundle, source: str = "bundle", *, allow_provider_mismatch: bool = False) -> Model:
    """The Model of a decoded bundle (cnnkit.bundle.Bundle): its spec resolved for inference, its weights
    matched by name and shape against that spec, its class count against the model's outputs."""
    from ..bundle import spec_and_weights

    spec, weights = spec_and_weights(bundle, source, allow_provider_mismatch=allow_provider_mismatch)
    try:
        return Model(spec, weights, classes=bundle.classes, metadata=bundle.training)
    except CnnkitError as exc:
        raise BundleError(f"{source}: {exc}") from None
