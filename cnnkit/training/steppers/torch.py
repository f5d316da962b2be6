"""PyTorch as a stepper: on a CPU, a GPU, or several processes under torchrun (DistributedDataParallel).

The same model (cnnkit builds and initialises it from the seed, then ``cnnkit.torch.to_module``
converts it), the batches the loop draws, augments and preprocesses, the spec's optimizer as
torch.optim.SGD/Adam/AdamW (its rate and momentum set before each step from the cnnkit optimizer
the loop's schedule drives), label smoothing and gradient clipping. Dropout draws torch's masks,
from a generator seeded by (seed, epoch, step, rank) at each step, so a resumed run repeats them.

``sync`` writes the weights back into the cnnkit Model (``from_module``) and the torch optimizer's
state into the cnnkit optimizer the checkpoint keeps (``exp_avg``/``exp_avg_sq``/``step`` as Adam's
``m``/``v``/``t``, ``momentum_buffer`` as SGD's ``velocity``), in cnnkit's layouts; ``start`` loads it
back on resume. The state crosses between layouts through the same ``to_torch``/``from_torch``
hooks as the weights, so a checkpoint is the same whichever engine wrote it. With ``train.ema`` the
moving average of the weights is kept in torch as torch's AveragedModel(use_buffers=True) keeps it
(``_foreach_lerp_`` over the parameters and float buffers, after every step), and ``sync`` hands it
over in cnnkit's layouts too.

Under torchrun (WORLD_SIZE > 1): ``train.batch_size`` is the global batch; every process augments the
whole batch of the seeded order and takes its contiguous share, and each share's loss is weighted
by its size, so the averaged gradient is the whole batch's mean gradient (up to float summation
order). Batch norm normalises each share with its own batch statistics (SyncBatchNorm runs on GPUs
only); its running statistics are kept per process (DDP's ``broadcast_buffers`` off, which would
overwrite them with rank 0's at every step) and averaged over the processes at each ``sync`` —
every epoch end and every checkpoint. The running statistics are exponential moving averages,
linear in the batch statistics, so averaging them at an epoch's end gives what averaging each
step's would: the running mean of the whole batch's mean. gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...errors import CnnkitError
from ...export import require
from ...optim import OptimizerParams
from .base import Stepper

DEVICES = ("cpu", "cuda", "mps")
# Examples the per-epoch cross-check compares: enough to catch a wrong conversion, few enough not to
# repeat the epoch's evaluation in each framework.
CROSS_CHECK = 1024


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


def torch_optimizer(torch, p: OptimizerParams, params):
    """The torch.optim optimizer matching a validated spec's ``train.optimizer`` params."""
    kind = p.type
    if kind == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov and p.momentum > 0, weight_decay=p.weight_decay)
    torch_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind)
    if torch_cls is None:
        raise CnnkitError(f"--backend torch does not know optimizer {kind!r} yet (it knows sgd, adam, adamw)")
    return torch_cls(params, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay)


# The torch optimizer's per-parameter state and the cnnkit optimizer's per-weight maps it becomes.
STATE_NAMES = {"exp_avg": "m", "exp_avg_sq": "v", "momentum_buffer": "velocity"}


class TorchStepper(Stepper):
    name = "torch"

    def __init__(self, device: str = "cpu"):
        (self.torch,) = require("torch", extra="torch", purpose="--backend torch")
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        self.device_name = device
        self.device = resolve_device(self.torch, device, self.local_rank)  # once, before any data is read
        self.distributed = self.world > 1

    def start(self, model, state, sample: np.ndarray) -> None:
        torch = self.torch
        self.model, self.state, self.settings, self.sample = model, state, model.spec.train, sample[:CROSS_CHECK]
        if self.distributed and self.settings.batch_size < self.world:
            raise CnnkitError(f"train.batch_size {self.settings.batch_size} is the global batch: it must be at least the number of processes ({self.world})")
        if self.distributed and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        from ...export.torch import to_module

        self.module = to_module(model, logits=True).to(self.device).train()
        self.trained = self._ddp(self.module) if self.distributed else self.module
        self.optimizer = torch_optimizer(torch, self.settings.optimizer, self.module.parameters())
        if state.done:  # a resumed run: the optimizer goes on from the checkpoint's state
            self._load_optimizer_state()
        self._average = None  # with train.ema: the average of the module's float state, in _float_state's order
        if state.ema is not None and state.ema.updates:
            self._average = [t.detach().clone().to(self.device) for t in self._float_state(self._layout_module(state.ema.weights))]

    def loss(self, x: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> float:
        torch = self.torch
        torch.manual_seed(int(np.random.SeedSequence([self.settings.seed, epoch, step, self.rank]).generate_state(1)[0]))  # dropout's masks
        lo, hi = len(x) * self.rank // self.world, len(x) * (self.rank + 1) // self.world
        xs = torch.from_numpy(np.ascontiguousarray(x[lo:hi])).to(self.device)
        ys = torch.from_numpy(np.asarray(labels[lo:hi], dtype=np.int64)).to(self.device)
        out = self.trained(xs)
        if hi > lo:  # the mean over the whole batch, once DDP averages the processes' gradients
            loss = torch.nn.functional.cross_entropy(out, ys, label_smoothing=self.settings.label_smoothing)
            self._scaled = loss * ((hi - lo) * self.world / len(x))
        else:  # an empty share still joins the gradient all-reduce
            loss = self._scaled = out.sum() * 0.0
        total = loss.detach().double() * (hi - lo)
        if self.distributed:  # every process sees the whole batch's loss, so all stop together on a non-finite one
            torch.distributed.all_reduce(total)
        return float(total) / len(x)

    def update(self) -> None:
        self.optimizer.zero_grad(set_to_none=False)
        self._scaled.backward()
        if self.settings.clip_grad_norm is not None:
            self.torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.settings.clip_grad_norm)
        knobs = self.state.optimizer  # the cnnkit optimizer: the loop's schedule set its lr and momentum
        for group in self.optimizer.param_groups:
            group["lr"] = knobs.lr
            if "betas" in group:
                group["betas"] = (knobs.momentum, group["betas"][1])
            else:
                group["momentum"] = knobs.momentum
        self.optimizer.step()
        self._scaled = None

    def average(self, ema) -> None:
        from ..ema import ema_decay

        current = self._float_state(self.module)
        with self.torch.no_grad():
            if self._average is None:  # the first update copies, as AveragedModel does
                self._average = [t.detach().clone() for t in current]
            else:
                self.torch._foreach_lerp_(self._average, current, 1.0 - ema_decay(ema.spec, ema.updates))
        ema.updates += 1

    def sync(self) -> None:
        from ...export.torch import from_module

        if self.distributed:
            self._average_running_statistics()
        if not self.is_main:
            return
        from_module(self.module, self.model)
        self._save_optimizer_state()
        if self._average is not None:
            self.state.ema.weights = self._average_in_cnnkit_layout()
        cross_check(self.torch, self.module, self.model, self.sample, self.device)

    def any_rank(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        value = self.torch.tensor([int(flag)], dtype=self.torch.int64, device=self.device)
        self.torch.distributed.all_reduce(value, op=self.torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def share(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = self.torch.tensor([value], dtype=self.torch.int64, device=self.device)
        self.torch.distributed.broadcast(tensor, 0)
        return int(tensor.item())

    def close(self, finished: bool = False) -> None:
        if self.distributed and self.torch.distributed.is_initialized():
            if finished:  # every process is here: let the last collective settle before any tears down
                self.torch.distributed.barrier()
            self.torch.distributed.destroy_process_group()

    def describe(self) -> dict[str, Any]:
        return {"name": "torch", "torch_version": self.torch.__version__, "device": self.device_name, "processes": self.world}

    def banner(self) -> str:
        return f" with PyTorch on {self.device_name}" + (f" ({self.world} processes)" if self.distributed else "")

    # -- the parts of start and sync --------------------------------------------------------------

    def _ddp(self, module):
        """DDP without the buffer broadcast before each forward (it would overwrite every process's
        running statistics with rank 0's): each keeps its own, and ``sync`` averages them."""
        import inspect

        ddp = self.torch.nn.parallel.DistributedDataParallel
        if "forward_sync_buffers" in inspect.signature(ddp).parameters:  # torch >= 2.13 names it so (the old name warns)
            return ddp(module, forward_sync_buffers=False)
        return ddp(module, broadcast_buffers=False)

    def _average_running_statistics(self) -> None:
        """Each process's running statistics (every float buffer: batch norm's running mean and
        variance), and their moving averages with train.ema, replaced by their mean over the processes."""
        torch = self.torch
        buffers = [b for b in self.module.buffers() if b.is_floating_point()]
        if self._average is not None:
            names = {name for name, _ in self.module.named_buffers()}
            keys = [k for k, t in self.module.state_dict().items() if t.is_floating_point()]
            buffers += [average for key, average in zip(keys, self._average) if key in names]
        with torch.no_grad():
            for buffer in buffers:
                torch.distributed.all_reduce(buffer)
                buffer /= self.world

    def _float_state(self, module) -> list:
        """The module's parameters and float buffers (batch norm's running statistics), in state_dict order."""
        return [t for t in module.state_dict().values() if t.is_floating_point()]

    def _average_in_cnnkit_layout(self) -> dict[str, np.ndarray]:
        """The moving average as per-weight arrays in cnnkit layouts (through the layers' from_torch hooks)."""
        from ...export.torch import from_module

        arrays = {name: np.zeros_like(a) for name, a in self.model.weights.items()}
        holder = self._layout_module(arrays)
        with self.torch.no_grad():
            for target, average in zip(self._float_state(holder), self._average):
                target.copy_(average.detach().cpu())
        from_module(holder, SimpleNamespace(layers=self.model.layers, weights=arrays, ends_with_softmax=self.model.ends_with_softmax))
        return arrays

    def _save_optimizer_state(self) -> None:
        """torch's per-parameter state into the cnnkit optimizer's maps (in cnnkit layouts) and its step count."""
        knobs, params = self.state.optimizer, list(self.module.parameters())
        for key, attr in STATE_NAMES.items():
            if not isinstance(getattr(knobs, attr, None), dict):
                continue
            tensors = [self.optimizer.state.get(p, {}).get(key) for p in params]
            setattr(knobs, attr, self._in_cnnkit_layout(tensors, getattr(knobs, attr)))
        steps = [s["step"] for s in self.optimizer.state.values() if "step" in s]
        if steps and hasattr(knobs, "t"):
            knobs.t = int(steps[0])

    def _load_optimizer_state(self) -> None:
        knobs, params = self.state.optimizer, list(self.module.parameters())
        for key, attr in STATE_NAMES.items():
            arrays = getattr(knobs, attr, None)
            if not isinstance(arrays, dict) or (attr == "velocity" and not any(a.any() for a in arrays.values())):
                continue  # SGD without momentum so far keeps no buffer
            for param, tensor in zip(params, self._in_torch_layout(arrays)):
                self.optimizer.state[param][key] = tensor.to(self.device)
        if hasattr(knobs, "t"):
            for param in params:
                self.optimizer.state[param]["step"] = self.torch.tensor(float(knobs.t), dtype=self.torch.float32)

    def _layout_module(self, arrays: dict[str, np.ndarray]):
        """A module of the model's structure holding ``arrays`` (per-weight, cnnkit names and layouts) as its weights."""
        from ...export.torch import to_module

        return to_module(SimpleNamespace(layers=self.model.layers, weights=arrays, ends_with_softmax=self.model.ends_with_softmax), logits=True)

    def _in_torch_layout(self, arrays: dict[str, np.ndarray]) -> list:
        """Per-weight arrays as tensors in the module's parameter order."""
        return [p.detach().clone() for p in self._layout_module(arrays).parameters()]

    def _in_cnnkit_layout(self, tensors: list, current: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tensors in the module's parameter order (None: no state yet) as per-weight arrays in cnnkit layouts."""
        from ...export.torch import from_module

        arrays = {name: np.zeros_like(a) for name, a in current.items()}
        holder = self._layout_module(arrays)  # zeros, buffers too: running statistics keep no optimizer state
        with self.torch.no_grad():
            for param, tensor in zip(holder.parameters(), tensors):
                if tensor is not None:
                    param.copy_(tensor.detach().cpu())
        from_module(holder, SimpleNamespace(layers=self.model.layers, weights=arrays, ends_with_softmax=self.model.ends_with_softmax))
        return arrays


def cross_check(torch, module, model, x: np.ndarray, device) -> None:
    """``module`` must predict the classes cnnkit's NumPy runtime predicts on the first CROSS_CHECK
    examples of ``x`` (else the conversion is wrong)."""
    x = x[:CROSS_CHECK]
    if not len(x):
        return
    module.eval()
    with torch.no_grad():
        predicted = np.concatenate([module(torch.from_numpy(x[i : i + 1024]).to(device)).argmax(1).cpu().numpy() for i in range(0, len(x), 1024)])
    module.train()
    mismatches = int((predicted != model.predict(x, preprocessed=True, tta=False)).sum())
    # Near-ties may flip in the last float bit; more than a handful means the two models differ.
    if mismatches > max(2, len(x) // 1000):
        raise CnnkitError(f"the torch model and the NumPy runtime disagree on {mismatches} of {len(x)} predictions")
