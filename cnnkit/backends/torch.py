"""``cnnkit run SPEC --backend torch``: train a spec with PyTorch, on a CPU, a GPU, or under torchrun.

The same model (cnnkit builds and initialises it from the seed, then ``cnnkit.torch.to_module``
converts it), the same data and preprocessing (cnnkit's data source and ``Model.preprocess``), the
same per-epoch seeded order, optimizer (torch.optim.SGD/Adam/AdamW with the spec's settings),
schedule (cnnkit's own schedule object, stepped per batch, its rate and momentum copied into the
torch optimizer), label smoothing and gradient clipping as the NumPy loop in ``cnnkit.training``.
The rest is the NumPy loop's own code, not a copy: the stratified validation split and the
augmenter (``training_arrays``, ``augmenter``: each NumPy batch is augmented, seeded by (seed, epoch,
step), before it becomes a tensor), the per-epoch scoring, best-epoch monitor and early stopping
(``score_epoch``, ``new_monitor``), and the end of a run (``finish``: best weights restored, test
scored once with validation, health warnings). A non-finite loss stops training at its step.
After each epoch the weights come back into the cnnkit Model (``from_module``) and cnnkit's NumPy
runtime scores them, so the history and the bundle are what that runtime gives.

Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: ``train.batch_size`` is the
global batch; every rank augments the whole batch of the seeded order (the same draws as one
process) and takes its contiguous share of it, and each rank's loss is weighted by its share, so
the averaged gradient is the whole batch's mean gradient (as one process would compute it, up to
float summation order). Rank 0 alone evaluates, keeps the model and decides early stopping (it
broadcasts the decision); gloo on CPU, nccl on CUDA. Known differences: batch norm normalises with
each rank's own share of the batch (no SyncBatchNorm); dropout draws torch's masks, not cnnkit's.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np

from ..errors import CnnkitError
from ..export import require
from ..runtime.model import Model
from ..optim import OptimizerParams, build_schedule

DEVICES = ("cpu", "cuda", "mps")


class _Knobs:
    """What a cnnkit schedule sets on an optimizer (lr, momentum), to copy into torch's param groups."""

    def __init__(self, lr: float, momentum: float):
        self.lr, self.momentum = lr, momentum


def resolve_device(torch, device: str, local_rank: int):
    """The torch device for ``device``, or a one-line error when this machine does not have it."""
    if device not in DEVICES:
        raise CnnkitError(f"--device must be one of {', '.join(DEVICES)}. Received: {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise CnnkitError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise CnnkitError("--device mps: Apple's Metal backend is not available here; use --device cpu")
    return torch.device(device)


def check_device(device: str) -> None:
    """A one-line error unless torch is installed and this machine has ``device``."""
    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    resolve_device(torch, device, 0)


def torch_optimizer(torch, p: OptimizerParams, params):
    """The torch.optim optimizer matching a validated spec's ``train.optimizer`` params, and its knobs."""
    kind = p.type
    if kind == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov and p.momentum > 0, weight_decay=p.weight_decay), _Knobs(p.lr, p.momentum)
    torch_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind)
    if torch_cls is None:
        raise CnnkitError(f"--backend torch does not know optimizer {kind!r} yet (it knows sgd, adam, adamw)")
    return torch_cls(params, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay), _Knobs(p.lr, p.beta1)


def _apply_knobs(optimizer, knobs: _Knobs) -> None:
    for group in optimizer.param_groups:
        group["lr"] = knobs.lr
        if "betas" in group:
            group["betas"] = (knobs.momentum, group["betas"][1])
        else:
            group["momentum"] = knobs.momentum


def fit_torch(model: Model, data, device: str = "cpu", on_epoch=None):
    """Train ``model`` (a fresh cnnkit Model) with PyTorch in place; returns cnnkit's History of EpochRecords.

    Under torchrun every rank calls this; only rank 0's model ends up trained and evaluated (the
    others return an empty History). See the module docstring for the semantics.
    """
    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    from ..export.torch import from_module, to_module
    from ..training.health import TrainingDiverged, TrainingWarning, divergence_message
    from ..training.loop import History, augmenter, check_classes, epoch_record, finish, new_monitor, training_arrays

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(torch, device, local_rank)
    check_classes(model, data)  # before any training time is spent
    settings = model.spec.train
    if world > 1 and settings.batch_size < world:
        raise CnnkitError(f"train.batch_size {settings.batch_size} is the global batch: it must be at least the number of processes ({world})")
    # The NumPy loop's arrays, split, augmenter and monitor: one implementation for both backends.
    x, y, held_out, rows = training_arrays(model, data)
    if rows is not None:  # a set too big to convert at once (the NumPy loop converts it per batch): converted here in full
        x = model.preprocess(x[rows])
    augment, monitor = augmenter(model), new_monitor(model)
    x_test = model.preprocess(data.test_images)
    restore = held_out is not None and settings.restore_best is not False
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if target.type == "cuda" else "gloo")
    try:
        torch.manual_seed(settings.seed)
        module = to_module(model, logits=True).to(target).train()
        trained = torch.nn.parallel.DistributedDataParallel(module) if distributed else module
        optimizer, knobs = torch_optimizer(torch, settings.optimizer, module.parameters())
        rng = np.random.default_rng(settings.seed)  # the NumPy loop's order, drawn the same way
        n, batch = len(x), settings.batch_size
        steps = math.ceil(n / batch)
        schedule = build_schedule(settings.schedule, knobs.lr, total_steps=settings.epochs * steps)
        done, history, best_weights, first_loss = 0, History(), None, None
        for epoch in range(1, settings.epochs + 1):
            order = rng.permutation(n) if settings.shuffle else np.arange(n)
            started, loss_sum = time.perf_counter(), 0.0
            for step in range(steps):
                idx = order[step * batch : (step + 1) * batch]
                # The whole (global) batch is augmented as the NumPy loop does, then each rank takes its share.
                xb = x[idx] if augment is None else augment(x[idx], epoch, step)
                lo, hi = len(idx) * rank // world, len(idx) * (rank + 1) // world
                xs = torch.from_numpy(np.ascontiguousarray(xb[lo:hi])).to(target)
                ys = torch.from_numpy(y[idx[lo:hi]]).to(target)
                out = trained(xs)
                if hi > lo:  # the mean over the whole batch, once DDP averages the ranks' gradients
                    loss = torch.nn.functional.cross_entropy(out, ys, label_smoothing=settings.label_smoothing)
                    scaled = loss * ((hi - lo) * world / len(idx))
                else:  # an empty share still joins the gradient all-reduce
                    loss = scaled = out.sum() * 0.0
                batch_loss = loss.detach().double() * (hi - lo)
                if distributed:  # every rank sees the whole batch's loss, so all stop together on a non-finite one
                    torch.distributed.all_reduce(batch_loss)
                batch_loss = float(batch_loss) / len(idx)
                if not math.isfinite(batch_loss):  # at its step, before the update, as the NumPy loop does
                    raise TrainingDiverged(divergence_message(epoch, step + 1, steps, batch_loss, knobs.lr if done else None))
                first_loss = batch_loss if first_loss is None else first_loss
                optimizer.zero_grad(set_to_none=False)
                scaled.backward()
                if settings.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), settings.clip_grad_norm)
                schedule.apply(knobs, done)
                _apply_knobs(optimizer, knobs)
                optimizer.step()
                done += 1
                loss_sum += batch_loss * len(idx)
            seconds = time.perf_counter() - started
            stop = torch.zeros(1, dtype=torch.int64)
            if rank == 0:
                from_module(module, model)
                _cross_check(torch, module, model, x_test if held_out is None else held_out[0], target)
                record = epoch_record(model, epoch, loss_sum / n, knobs.lr, seconds, x_test, data.test_labels, held_out)
                improved = monitor is not None and monitor.update(epoch, getattr(record, monitor.monitor))
                if improved and restore:
                    best_weights = {name: w.copy() for name, w in model.weights.items()}
                history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
                stop[0] = int(monitor is not None and monitor.should_stop)
            if distributed:  # rank 0's early-stopping decision, for every rank
                stop = stop.to(target)
                torch.distributed.broadcast(stop, 0)
            if int(stop[0]):
                break
        if rank == 0:
            finish(model, history, monitor, best_weights, first_loss, x_test, data.test_labels, held_out)
            for message in history.warnings:
                warnings.warn(message, TrainingWarning, stacklevel=2)
        return history
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# Examples the per-epoch cross-check compares: enough to catch a wrong conversion, few enough not to
# repeat the epoch's evaluation (the whole test set) a second time in each framework.
CROSS_CHECK = 1024


def _cross_check(torch, module, model, x, target) -> None:
    """The torch module must predict the classes cnnkit's NumPy runtime predicts on the first
    CROSS_CHECK examples of ``x`` (else the conversion is wrong)."""
    x = x[:CROSS_CHECK]
    if not len(x):
        return
    module.eval()
    with torch.no_grad():
        torch_pred = np.concatenate([module(torch.from_numpy(x[i : i + 1024]).to(target)).argmax(1).cpu().numpy() for i in range(0, len(x), 1024)])
    module.train()
    mismatches = int((torch_pred != model.predict(x, preprocessed=True)).sum())
    # Near-ties may flip in the last float bit; more than a handful means the two models differ.
    if mismatches > max(2, len(x) // 1000):
        raise CnnkitError(f"the torch model and the NumPy runtime disagree on {mismatches} of {len(x)} predictions")


def is_main_process() -> bool:
    """False on the ranks other than 0 under torchrun: they neither print nor write."""
    return int(os.environ.get("RANK", "0")) == 0


def train_torch(spec, data, device: str = "cpu", on_epoch=None) -> Model | None:
    """Build the spec's model, train it with PyTorch, return it with its training metadata (rank 0; others: None)."""
    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    from ..training import training_metadata

    model = Model(spec)
    model.classes = list(data.classes)
    history = fit_torch(model, data, device, on_epoch)
    if not is_main_process():
        return None
    model.metadata = training_metadata(model, data, history)
    model.metadata["backend"] = {"name": "torch", "torch_version": torch.__version__, "device": device,
                                 "processes": int(os.environ.get("WORLD_SIZE", "1"))}
    return model


def run_spec(spec, target, device: str = "cpu", say=print, force: bool = False, warn=print, strict: bool = False) -> None:
    """What ``cnnkit run --backend torch`` does: check the device, load the data, train, write the bundle (rank 0).

    Training warnings go to ``warn`` (one line each, without a "warning: " prefix); with ``strict`` they
    raise StrictFailure before the bundle is written.
    """
    from ..bundle import save
    from ..data import load_dataset
    from ..training import TrainingWarning

    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    resolve_device(torch, device, 0)  # a device the machine lacks fails before any data is read
    if not is_main_process():
        say = lambda msg: None  # noqa: E731
    d = spec.data
    data = load_dataset(d, tuple(spec.input.shape))
    held = "" if d.validation is None else f" ({d.validation if isinstance(d.validation, int) else f'{d.validation:.0%}'} held out for validation)"
    say(f"training {spec.name} with PyTorch on {device} on {len(data.train_labels):,} images from {data.source}{held}")
    started = time.perf_counter()
    with warnings.catch_warnings():  # printed below, once, like the NumPy backend's
        warnings.simplefilter("ignore", TrainingWarning)
        model = train_torch(spec, data, device, on_epoch=lambda r: say(r.summary()))
    if model is None:  # the other ranks under torchrun: rank 0 reports and writes
        return
    from ..training.session import report_training_end

    report_training_end(model, say, warn, strict)
    save(model, target, force=force)
    say(f"wrote {target} in {time.perf_counter() - started:.1f}s total")
