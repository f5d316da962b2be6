"""Estimated memory per image for training and inference, and the check that a training batch fits.

The estimate counts float32 arrays from the shapes alone, before anything is allocated:

- inference keeps one layer's input and output alive at a time, plus its workspace;
- training keeps every layer's input for backprop, plus one layer's output gradient and workspace
  (twice: forward and backward each need one);
- a convolution's workspace is its unfolded input (C * kh * kw values per output position), for a
  layer with a 4-D weight named ``kernel`` (F, C, kh, kw); other layers are counted without one;
- per model, not per image: the weights, their gradients and up to two optimizer moments.

It is an estimate (NumPy temporaries come and go), meant to catch a batch that cannot fit by a
wide margin — README "Memory" says how `cnnkit run` uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOAT_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    train_per_image: int  # bytes
    inference_per_image: int
    per_model: int  # weights, gradients and optimizer state while training

    def training_batch(self, batch_size: int) -> int:
        return self.per_model + batch_size * self.train_per_image


def _workspace(layer, input_shape, output_shape) -> int:
    kernel = layer.weights(input_shape).get("kernel")
    if kernel is None or len(kernel.shape) != 4 or len(output_shape) != 3:
        return 0
    _, channels, kh, kw = kernel.shape
    return channels * kh * kw * output_shape[1] * output_shape[2]


def estimate(resolved) -> MemoryEstimate:
    """The estimate for a resolved spec's layers (``ModelSpec.layers``)."""
    kept = 0
    peak_inference = 0
    peak_extra = 0
    params = 0
    for r in resolved:
        n_in, n_out = math.prod(r.input_shape), math.prod(r.output_shape)
        work = _workspace(r.layer, r.input_shape, r.output_shape)
        peak_inference = max(peak_inference, n_in + n_out + work)
        kept += n_in
        peak_extra = max(peak_extra, 2 * (n_out + work))
        params += sum(math.prod(w.shape) for w in r.layer.weights(r.input_shape).values())
    if resolved:
        kept += math.prod(resolved[-1].output_shape)
    return MemoryEstimate(FLOAT_BYTES * (kept + peak_extra), FLOAT_BYTES * peak_inference, FLOAT_BYTES * 4 * params)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where it cannot be read, e.g. not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def human(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def batch_fits(est: MemoryEstimate, batch_size: int, available: int | None = None) -> str | None:
    """None when a training batch fits in the available memory, else one line saying why not."""
    available = available_memory() if available is None else available
    need = est.training_batch(batch_size)
    if available is None or need <= available:
        return None
    fits = max(0, (available - est.per_model) // est.train_per_image) if est.train_per_image else 0
    advice = f"lower train.batch_size (at most {fits} fits)" if fits else "make the input or the layers smaller"
    return (f"a training batch of {batch_size} needs about {human(need)} ({human(est.train_per_image)} per image) "
            f"but only {human(available)} of memory is available; {advice}")
