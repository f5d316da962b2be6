"""What the per-step layer guard (cnnkit.runtime.guard) costs: an A/B in one process.

    CNNKIT_NUM_THREADS=2 python tools/bench_guard.py          # seed net at batch 1 and 64, best net at batch 128
    CNNKIT_NUM_THREADS=2 python tools/bench_guard.py --json
    CNNKIT_NUM_THREADS=2 python tools/bench_guard.py --case seed:1:100 --rounds 60   # many short rounds of one case

One model per case trains on the same images with the guard on (the model's own checked forwards)
and off (each layer's bare ``forward``, which is what the model called before the guard), in
alternating rounds (on-off, off-on, ...) so that load from other processes hits both alike. Each
round times whole training steps (forward, loss, backprop, SGD step) and gives a step time per
variant; the figure that matters is the median of the paired differences (on - off) next to how
much the unguarded rounds vary among themselves (the noise). Check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ARCHITECTURES, CnnkitRunner, load_images  # noqa: E402

# (architecture, batch, images per round): rounds of about a second or more on a loaded 2-core machine.
CASES = [("seed", 1, 800), ("seed", 64, 4096), ("best", 128, 2048)]


def step_time(runner: CnnkitRunner, x, y, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process's threads) per training step over ``x``. CPU time
    counts only this process's work, so it varies far less than wall time on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    runner.train(x, y, batch)
    steps = len(x) // batch
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def per_call_overhead(calls: int = 200_000) -> dict:
    """The guard's own cost per layer call, in isolation: a relu on one small sample, guarded and
    bare, alternating blocks (what each guarded forward adds, before any array work)."""
    import numpy as np

    import cnnkit
    from cnnkit.layers.base import Context

    model = cnnkit.build({"input": {"shape": [4]}, "layers": [{"type": "relu"}]})
    x, inference, training = np.ones((1, 4), np.float32), Context(False), Context(True)
    guarded, bare = model._forwards[0], model.layers[0].layer.forward
    results = {}
    for label, ctx in (("inference", inference), ("training", training)):
        blocks = {guarded: [], bare: []}
        for _ in range(10):
            for forward in (guarded, bare):
                start = time.perf_counter()
                for _ in range(calls // 10):
                    forward({}, x, ctx)
                blocks[forward].append((time.perf_counter() - start) / (calls // 10))
        results[f"{label}_forward_ns"] = round((min(blocks[guarded]) - min(blocks[bare])) * 1e9)
    return results


def measure(arch: str, batch: int, images: int, rounds: int, x, y) -> dict:
    runner = CnnkitRunner(ARCHITECTURES[arch])
    model = runner.model
    guarded = list(model._forwards)  # the model's checked forwards (cnnkit.runtime.guard)
    bare = [r.layer.forward for r in model.layers]  # what the part loops called before the guard
    xs, ys = x[: images - images % batch], y[: images - images % batch]
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for on in (True, False):  # warm-up: caches, allocator, thread pool
        model._forwards = guarded if on else bare
        step_time(runner, xs[: batch * 4], ys[: batch * 4], batch)
    for i in range(rounds):
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            model._forwards = guarded if on else bare
            wall, used = step_time(runner, xs, ys, batch)
            times[on].append(wall)
            cpu[on].append(used)
    model._forwards = guarded
    on, off = statistics.median(times[True]), statistics.median(times[False])
    paired = [a - b for a, b in zip(times[True], times[False])]
    cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
    cpu_paired = [a - b for a, b in zip(cpu[True], cpu[False])]
    return {
        "arch": arch, "batch": batch, "steps_per_round": len(xs) // batch, "rounds": rounds,
        "layers": len(model.layers), "guard_calls_per_step": 2 * len(model.layers),
        "step_us_on": round(on * 1e6, 1), "step_us_off": round(off * 1e6, 1),
        "paired_diff_us_median": round(statistics.median(paired) * 1e6, 2),
        "paired_diff_pct_median": round(100 * statistics.median(paired) / off, 2),
        "paired_diff_pct_range": [round(100 * min(paired) / off, 2), round(100 * max(paired) / off, 2)],
        "cpu_paired_diff_us_median": round(statistics.median(cpu_paired) * 1e6, 2),
        "cpu_paired_diff_us_quartiles": [round(q * 1e6, 2) for q in statistics.quantiles(cpu_paired, n=4)] if len(cpu_paired) > 1 else None,
        "off_rounds_spread_pct": round(100 * (max(times[False]) - min(times[False])) / off, 2),
        "cpu_us_on": round(cpu_on * 1e6, 1), "cpu_us_off": round(cpu_off * 1e6, 1),
        "cpu_paired_diff_pct_median": round(100 * statistics.median(cpu_paired) / cpu_off, 2),
        "cpu_paired_diff_pct_range": [round(100 * min(cpu_paired) / cpu_off, 2), round(100 * max(cpu_paired) / cpu_off, 2)],
        "cpu_off_rounds_spread_pct": round(100 * (max(cpu[False]) - min(cpu[False])) / cpu_off, 2),
    }


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), "unknown")
    return {"cpu": model, "threads": os.environ.get("CNNKIT_NUM_THREADS", "default"), "load_average": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (default 7)")
    parser.add_argument("--case", action="append", metavar="ARCH:BATCH:IMAGES", help="measure this case instead (repeatable), e.g. seed:1:100")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    cases = [(arch, int(batch), int(images)) for arch, batch, images in (c.split(":") for c in args.case)] if args.case else CASES
    x, y = load_images(max(images for _, _, images in cases))
    before = machine()
    overhead = per_call_overhead()
    results = [measure(arch, batch, images, args.rounds, x, y) for arch, batch, images in cases]
    report = {"machine": before, "load_average_after": machine()["load_average"], "guard_per_call": overhead, "cases": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{before['cpu']}, CNNKIT_NUM_THREADS={before['threads']}, load average {before['load_average']} -> {report['load_average_after']}")
    print(f"guard per layer call (relu, one small sample): +{overhead['inference_forward_ns']} ns inference, +{overhead['training_forward_ns']} ns training forward")
    for r in results:
        print(f"{r['arch']:>4} batch {r['batch']:>3}: wall per step {r['step_us_off']:.1f} us unguarded, {r['step_us_on']:.1f} us guarded, paired difference "
              f"{r['paired_diff_pct_median']:+.2f}% (rounds {r['paired_diff_pct_range'][0]:+.2f}% .. {r['paired_diff_pct_range'][1]:+.2f}%, unguarded spread "
              f"{r['off_rounds_spread_pct']:.1f}%); CPU per step {r['cpu_us_off']:.1f} / {r['cpu_us_on']:.1f} us, paired {r['cpu_paired_diff_pct_median']:+.2f}% "
              f"(rounds {r['cpu_paired_diff_pct_range'][0]:+.2f}% .. {r['cpu_paired_diff_pct_range'][1]:+.2f}%, unguarded spread {r['cpu_off_rounds_spread_pct']:.1f}%)")


if __name__ == "__main__":
    main()
