"""Per-layer, per-pass time of a net in cnnkit and in PyTorch (``tools/bench.py --profile``).

Each step the model runs (a layer, or layers cnnkit runs as one fused step) is timed alone on the
activations the real net feeds it: forward in training, backward, and inference, in ms per 128
images, one thread for both frameworks (OpenBLAS held to one thread, ``torch.set_num_threads(1)``).
That is CPU time: a training step split over 2 threads takes about half of it in wall time. The two
frameworks alternate round by round; the median of the rounds is reported.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

IMAGES = 128


def _median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _cnnkit_passes(model, step, x, dy_rng):
    """(forward, backward, inference) callables for one of the model's steps on input x, and its output."""
    y, backprop, _ = model.run_step(step, x, train=True, key=(0, 0))
    dy = dy_rng.normal(size=y.shape).astype(np.float32)
    return (lambda: model.run_step(step, x, train=True, key=(0, 0)), lambda: backprop(dy),
            lambda: model.run_step(step, x, train=False)), y, dy


def _torch_passes(torch, modules, x, dy, first: bool):
    """The same three passes for the PyTorch modules of the same layers."""
    net = torch.nn.Sequential(*modules)
    xt, dyt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(dy))
    xg = xt.clone().requires_grad_(not first)  # cnnkit skips the first layer's input gradient too
    state = {}

    def forward():
        net.train()
        state["y"] = net(xg)

    def backward():
        state["y"].backward(dyt, retain_graph=True)

    def infer():
        net.eval()
        with torch.inference_mode():
            net(xt)

    return forward, backward, infer


def profile(spec, rounds: int = 5) -> list[dict]:
    """One row per step of ``spec``'s net: its layers and the ms per 128 images of each pass."""
    import torch

    import cnnkit
    from cnnkit.runtime import parallel
    from cnnkit.torch import to_module

    torch.set_num_threads(1)
    model = cnnkit.build(spec)
    twin = list(to_module(model, logits=True).children())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(IMAGES, *model.input_shape)).astype(np.float32)
    rows = []
    with parallel.single_threaded_blas(), parallel.threads(1):
        for step in model.steps(logits=True):
            ours, y, dy = _cnnkit_passes(model, step, x, rng)
            theirs = _torch_passes(torch, [twin[i] for i in step.indices], x, dy, step.indices[0] == 0)
            times = {name: [] for name in ("cnnkit", "pytorch")}
            for fn in (*ours, *theirs):  # warm-up: allocator, oneDNN kernel choice
                fn()
            for _ in range(rounds):
                for name, passes in (("cnnkit", ours), ("pytorch", theirs)):
                    times[name].append([_median_ms(fn, 1) for fn in passes])
            row = {"step": step.label, "layers": [model.layers[i].type for i in step.indices], "input_shape": list(x.shape[1:])}
            for name, samples in times.items():
                for k, what in enumerate(("forward", "backward", "inference")):
                    row[f"{name}_{what}_ms"] = round(statistics.median(s[k] for s in samples), 2)
            rows.append(row)
            x = y
    return rows


def print_profile(rows: list[dict]) -> None:
    head = f"{'step':34} {'input':13} | {'cnnkit fwd':>10} {'bwd':>7} {'infer':>7} | {'pytorch fwd':>11} {'bwd':>7} {'infer':>7}"
    print(f"ms per {IMAGES} images, one thread each (CPU time):")
    print(head)
    print("-" * len(head))
    totals = np.zeros(6)
    for r in rows:
        values = [r[f"{n}_{w}_ms"] for n in ("cnnkit", "pytorch") for w in ("forward", "backward", "inference")]
        totals += values
        shape = "x".join(map(str, r["input_shape"]))
        print(f"{r['step'][:34]:34} {shape:13} | {values[0]:10.2f} {values[1]:7.2f} {values[2]:7.2f} | {values[3]:11.2f} {values[4]:7.2f} {values[5]:7.2f}")
    print(f"{'total':34} {'':13} | {totals[0]:10.1f} {totals[1]:7.1f} {totals[2]:7.1f} | {totals[3]:11.1f} {totals[4]:7.1f} {totals[5]:7.1f}")
    print(f"training (forward + backward): cnnkit {totals[0] + totals[1]:.1f} ms, pytorch {totals[3] + totals[4]:.1f} ms, "
          f"ratio of speeds {(totals[3] + totals[4]) / (totals[0] + totals[1]):.2f}; inference ratio {totals[5] / totals[2]:.2f}")
