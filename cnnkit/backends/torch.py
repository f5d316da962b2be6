"""``cnnkit run SPEC --backend torch``: train a spec with PyTorch, on a CPU, a GPU, or under torchrun.

The same model (cnnkit builds and initialises it from the seed, then ``cnnkit.torch.to_module``
converts it), the same data and preprocessing (cnnkit's data source and ``Model.preprocess``), the
same per-epoch seeded order, optimizer (torch.optim.SGD/Adam/AdamW with the spec's settings),
schedule (cnnkit's own schedule object, stepped per batch, its rate and momentum copied into the
torch optimizer), label smoothing and gradient clipping as the NumPy loop in ``cnnkit.train``.
After each epoch the weights come back into the cnnkit Model (``from_module``) and the test set is
evaluated by cnnkit's NumPy runtime, so the history and the bundle are what that runtime gives.

Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: ``train.batch_size`` is the
global batch; each rank takes its contiguous share of every batch of the seeded order, and each
rank's loss is weighted by its share, so the averaged gradient is the whole batch's mean gradient
(as one process would compute it, up to float summation order). Rank 0 alone evaluates and keeps
the model; gloo on CPU, nccl on CUDA. Known difference: batch norm normalises with each rank's own
share of the batch (no SyncBatchNorm).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from ..errors import CnnkitError, DataError
from ..export import require
from ..model import Model
from ..optim import OPTIMIZERS, build_schedule

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


def torch_optimizer(torch, spec_optimizer: dict, params):
    """The torch.optim optimizer matching a validated ``train.optimizer``, and its knobs."""
    kind = spec_optimizer["type"]
    cls = OPTIMIZERS[kind]
    p = cls.Params.model_validate(spec_optimizer)
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
    """Train ``model`` (a fresh cnnkit Model) with PyTorch in place; returns cnnkit's EpochRecords.

    Under torchrun every rank calls this; only rank 0's model ends up trained and evaluated (the
    others return an empty history). See the module docstring for the semantics.
    """
    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    from ..export.torch import from_module, to_module
    from ..train import EpochRecord, evaluate

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(torch, device, local_rank)
    _check_labels(model, data)
    settings = model.spec.train
    missing = [path for path, value in (("data.augment", getattr(model.spec.data, "augment", None)), ("data.validation", getattr(model.spec.data, "validation", None)),
                                        ("train.early_stopping", getattr(settings, "early_stopping", None))) if value is not None]
    if missing:
        raise CnnkitError(f"--backend torch does not support {', '.join(missing)} yet; train this spec with the NumPy backend (the default)")
    if world > 1 and settings.batch_size < world:
        raise CnnkitError(f"train.batch_size {settings.batch_size} is the global batch: it must be at least the number of processes ({world})")
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if target.type == "cuda" else "gloo")
    try:
        torch.manual_seed(settings.seed)
        module = to_module(model, logits=True).to(target).train()
        trained = torch.nn.parallel.DistributedDataParallel(module) if distributed else module
        optimizer, knobs = torch_optimizer(torch, settings.optimizer, module.parameters())
        x = torch.from_numpy(model.preprocess(data.train_images))
        y = torch.from_numpy(np.asarray(data.train_labels, dtype=np.int64))
        x_test = model.preprocess(data.test_images)
        rng = np.random.default_rng(settings.seed)  # the NumPy loop's order, drawn the same way
        n, batch = len(x), settings.batch_size
        schedule = build_schedule(settings.schedule, knobs.lr, total_steps=settings.epochs * math.ceil(n / batch))
        step, history = 0, []
        for epoch in range(1, settings.epochs + 1):
            order = rng.permutation(n) if settings.shuffle else np.arange(n)
            started, total_loss = time.perf_counter(), torch.zeros((), dtype=torch.float64)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                share = idx[len(idx) * rank // world : len(idx) * (rank + 1) // world]
                xb, yb = x[share].to(target), y[share].to(target)
                out = trained(xb)
                if len(share):  # the mean over the whole batch, once DDP averages the ranks' gradients
                    loss = torch.nn.functional.cross_entropy(out, yb, label_smoothing=settings.label_smoothing)
                    scaled = loss * (len(share) * world / len(idx))
                else:  # an empty share still joins the gradient all-reduce
                    loss = scaled = out.sum() * 0.0
                optimizer.zero_grad(set_to_none=False)
                scaled.backward()
                if settings.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), settings.clip_grad_norm)
                schedule.apply(knobs, step)
                _apply_knobs(optimizer, knobs)
                optimizer.step()
                step += 1
                total_loss += loss.detach().double().cpu() * len(share)
            if distributed:
                reduced = total_loss.to(target)
                torch.distributed.all_reduce(reduced)
                total_loss = reduced.cpu()
            seconds = time.perf_counter() - started
            if not math.isfinite(float(total_loss)):
                raise DataError(f"training diverged in epoch {epoch} (loss is {float(total_loss)}); lower train.optimizer.lr")
            if rank == 0:
                from_module(module, model)
                scores = _evaluate_both(torch, module, model, x_test, data.test_labels, target, evaluate)
                record = EpochRecord(epoch, float(total_loss) / n, scores["accuracy"], scores["macro_f1"], knobs.lr, seconds)
                history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
        return history
    finally:
        if distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _check_labels(model: Model, data) -> None:
    """The NumPy loop's checks, before any training time is spent."""
    classes = model.output_shape[-1]
    if len(data.classes) != classes:
        raise DataError(f"the model has {classes} outputs but the dataset has {len(data.classes)} classes; "
                        f"make the last layer produce {len(data.classes)} outputs (e.g. dense units={len(data.classes)})")
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{split} labels range over {labels.min()}..{labels.max()}, but the model has {classes} outputs")


def _evaluate_both(torch, module, model, x_test, labels, target, evaluate) -> dict[str, float]:
    """cnnkit's NumPy scores; the torch module must predict the same classes (else the export is wrong)."""
    if not len(x_test):
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    module.eval()
    with torch.no_grad():
        torch_pred = np.concatenate([module(torch.from_numpy(x_test[i : i + 1024]).to(target)).argmax(1).cpu().numpy() for i in range(0, len(x_test), 1024)])
    module.train()
    numpy_pred = model.predict(x_test, preprocessed=True)
    mismatches = int((torch_pred != numpy_pred).sum())
    # Near-ties may flip in the last float bit; more than a handful means the two models differ.
    if mismatches > max(2, len(x_test) // 1000):
        raise CnnkitError(f"the torch model and the NumPy runtime disagree on {mismatches} of {len(x_test)} test predictions")
    return evaluate(model, x_test, labels, preprocessed=True)


def is_main_process() -> bool:
    """False on the ranks other than 0 under torchrun: they neither print nor write."""
    return int(os.environ.get("RANK", "0")) == 0


def train_torch(spec, data, device: str = "cpu", on_epoch=None) -> Model | None:
    """Build the spec's model, train it with PyTorch, return it with its training metadata (rank 0; others: None)."""
    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    from ..train import training_metadata

    model = Model(spec)
    model.classes = list(data.classes)
    history = fit_torch(model, data, device, on_epoch)
    if not is_main_process():
        return None
    model.metadata = training_metadata(model, data, history)
    model.metadata["backend"] = {"name": "torch", "torch_version": torch.__version__, "device": device,
                                 "processes": int(os.environ.get("WORLD_SIZE", "1"))}
    return model


def run_spec(spec, target, device: str = "cpu", say=print, force: bool = False) -> None:
    """What ``cnnkit run --backend torch`` does: check the device, load the data, train, write the bundle (rank 0)."""
    from ..bundle import save
    from ..data import load_fashion_mnist

    (torch,) = require("torch", extra="torch", purpose="--backend torch")
    resolve_device(torch, device, 0)  # a device the machine lacks fails before any data is read
    if not is_main_process():
        say = lambda msg: None  # noqa: E731
    d = spec.data
    data = load_fashion_mnist(d.dir, d.train_limit, d.test_limit)
    say(f"training {spec.name} with PyTorch on {device} on {len(data.train_labels):,} images from {data.source}")
    started = time.perf_counter()
    model = train_torch(spec, data, device, on_epoch=lambda r: say(
        f"epoch {r.epoch}: train loss {r.train_loss:.4f}, test accuracy {r.test_accuracy:.4f}, macro-F1 {r.test_macro_f1:.4f} ({r.seconds:.1f}s)"))
    if model is not None:  # rank 0 (or the only process) writes the bundle
        save(model, target, force=force)
        say(f"wrote {target} in {time.perf_counter() - started:.1f}s total")
