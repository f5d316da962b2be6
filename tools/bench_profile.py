"""Per-step, per-pass time of a net in cnnkit and in PyTorch (``tools/bench.py --profile``).

Each step the model runs (a layer, or layers cnnkit runs as one fused step: ``Model.steps``) is
timed alone on the activations the real net feeds it: in training forward and backward, and in
inference (whose steps may differ: batch norm folds into the convolution before it). The PyTorch
column runs the same layers' modules (``cnnkit.torch.to_module``) on the same arrays. Times are ms
per 128 images of one thread's CPU time (``time.thread_time``, OpenBLAS held to one thread,
``torch.set_num_threads(1)``), so other processes on the machine do not count; a training step
split over 2 threads takes about half of it in wall time. The frameworks alternate round by round;
each figure is the median of the rounds.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

IMAGES = 128
PASSES = {"train": ("forward", "backward"), "infer": ("inference",)}


def _ms(fn) -> float:
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) * 1000


def _torch_passes(torch, net, x, dy, mode: str, first: bool):
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if mode == "infer":
        net.eval()

        def infer():
            with torch.inference_mode():
                net(xt)

        return [infer]
    net.train()
    xg = xt.clone().requires_grad_(not first)  # cnnkit skips the first layer's input gradient too
    dyt, state = torch.from_numpy(np.ascontiguousarray(dy)), {}

    def forward():
        state["y"] = net(xg)

    return [forward, lambda: state["y"].backward(dyt, retain_graph=True)]


def profile(spec, rounds: int = 5) -> dict[str, list[dict]]:
    """{"train": rows, "infer": rows}: per step of ``spec``'s net, ms per 128 images of each pass."""
    import torch

    import cnnkit
    from cnnkit.runtime import parallel
    from cnnkit.torch import to_module

    torch.set_num_threads(1)
    saved = os.environ.get("CNNKIT_NUM_THREADS")
    os.environ["CNNKIT_NUM_THREADS"] = "1"
    try:
        model = cnnkit.build(spec)
        model.forward(np.zeros((2, *model.input_shape), np.float32))  # first-pass checks, malloc tuning
        twin = list(to_module(model, logits=True).children())
        count = len(twin)
        tables = {}
        with parallel.single_threaded_blas():
            for mode in ("train", "infer"):
                rng = np.random.default_rng(0)
                x = rng.normal(size=(IMAGES, *model.input_shape)).astype(np.float32)
                rows = []
                for step in model.steps(count, train=mode == "train"):
                    y, backprop, _ = model.run_step(step, x, mode == "train")
                    dy = rng.normal(size=y.shape).astype(np.float32)
                    ours = [lambda: model.run_step(step, x, True), lambda: backprop(dy)] if mode == "train" else [lambda: model.run_step(step, x, False)]
                    net = torch.nn.Sequential(*(twin[i] for i in step.indices))
                    theirs = _torch_passes(torch, net, x, dy, mode, step.indices[0] == 0)
                    for fn in ours + theirs:  # warm-up: allocator, oneDNN's kernel choice
                        fn()
                    times = {"cnnkit": [], "pytorch": []}
                    for _ in range(rounds):
                        for name, passes in (("cnnkit", ours), ("pytorch", theirs)):
                            times[name].append([_ms(fn) for fn in passes])
                    row = {"step": f"{step.label} {'+'.join(model.layers[i].type for i in step.indices)}", "kind": step.kind, "input_shape": list(x.shape[1:])}
                    for name, samples in times.items():
                        for k, what in enumerate(PASSES[mode]):
                            row[f"{name}_{what}_ms"] = round(statistics.median(s[k] for s in samples), 2)
                    rows.append(row)
                    x = y
                tables[mode] = rows
        return tables
    finally:
        if saved is None:
            os.environ.pop("CNNKIT_NUM_THREADS", None)
        else:
            os.environ["CNNKIT_NUM_THREADS"] = saved


def print_profile(tables: dict[str, list[dict]]) -> None:
    print(f"ms per {IMAGES} images, one thread each (CPU time):")
    for mode, rows in tables.items():
        passes = PASSES[mode]
        head = f"{'step (' + ('training' if mode == 'train' else 'inference') + ')':40} {'input':11} | " + " ".join(f"{'cnnkit ' + p:>16}" for p in passes) + " | " + " ".join(f"{'pytorch ' + p:>17}" for p in passes)
        print(head)
        print("-" * len(head))
        totals = {f"{n}_{p}_ms": 0.0 for n in ("cnnkit", "pytorch") for p in passes}
        for r in rows:
            for k in totals:
                totals[k] += r[k]
            shape = "x".join(map(str, r["input_shape"]))
            print(f"{r['step'][:40]:40} {shape:11} | " + " ".join(f"{r[f'cnnkit_{p}_ms']:16.2f}" for p in passes) + " | " + " ".join(f"{r[f'pytorch_{p}_ms']:17.2f}" for p in passes))
        print(f"{'total':40} {'':11} | " + " ".join(f"{totals[f'cnnkit_{p}_ms']:16.1f}" for p in passes) + " | " + " ".join(f"{totals[f'pytorch_{p}_ms']:17.1f}" for p in passes))
        ours, theirs = (sum(totals[f"{n}_{p}_ms"] for p in passes) for n in ("cnnkit", "pytorch"))
        print(f"{'training' if mode == 'train' else 'inference'}: cnnkit {ours:.1f} ms, pytorch {theirs:.1f} ms, cnnkit's speed / pytorch's {theirs / ours:.2f}\n")
