"""Benchmark cnnkit against PyTorch on CPU: the seed and the best spec's architectures, same data, batch, threads and float32.

    python tools/bench.py                      # training img/s at batch 1, 16, 32, 64; inference at 256; peak RSS
    python tools/bench.py --quick --json       # short smoke run, machine-readable
    python tools/bench.py --profile            # the best net step by step (ms per 128 images), cnnkit and PyTorch
    python tools/bench.py --time-to-accuracy   # wall time until specs/fashion_mnist_fast.json reaches 0.891
    python tools/bench.py --time-to-accuracy --spec specs/fashion_mnist_best.json --target 0.93

Throughput rounds alternate cnnkit and PyTorch so that load from other processes hits both alike;
the median of the rounds is reported. With onnxruntime installed (``cnnkit[onnx]``), inference rows
get an onnxruntime column and predict_proba is compared with it (tools/bench_infer.py). Peak RSS is measured in a separate child process per
framework (training at batch 64 on the full dataset, which is loaded inside the child), so one
framework's allocations never count against the other. Wall-clock figures are only as quiet as the
machine: check `uptime` first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED_SPEC = ROOT / "specs" / "fashion_mnist_seed.json"
FAST_SPEC = ROOT / "specs" / "fashion_mnist_fast.json"
TARGET_ACCURACY = 0.891
# The architectures measured, by name: adding one is one line (its PyTorch twin comes from the
# layers' own to_torch hooks, see torch_net). Throughput uses each spec's layers only (not its training settings).
ARCHITECTURES = {
    "seed": SEED_SPEC,
    "best": ROOT / "specs" / "fashion_mnist_best.json",
}


def sibling(name: str):
    """A module of tools/ (not a package), imported from its file next to this one."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def network(spec: Path):
    """The spec's model for timing one pass per image: its ``predict`` section (test-time
    augmentation, several passes per image) left out, so cnnkit, PyTorch and onnxruntime time the same net."""
    import cnnkit

    spec = json.loads(Path(spec).read_text())
    spec.pop("predict", None)
    return cnnkit.build(spec)


def load_images(limit: int | None = None):
    from cnnkit.data import load_fashion_mnist

    data = load_fashion_mnist(None, limit, 0)
    x = data.train_images.astype(np.float32)[:, None]
    x /= np.float32(255.0)  # the seed's preprocessing, in place so no full-size temporaries count in peak RSS
    x -= np.float32(0.5)
    return x, data.train_labels.astype(np.int64)


class CnnkitRunner:
    def __init__(self, spec: Path = SEED_SPEC, lr: float = 0.005):
        from cnnkit.runtime.losses import softmax_cross_entropy
        from cnnkit.optim import SGD

        self.model = network(spec)
        self.optimizer = SGD(SGD.Params(lr=lr), self.model.weights)
        self.loss = softmax_cross_entropy

    def train(self, x, y, batch):
        for start in range(0, len(x), batch):
            logits, backprop = self.model.forward(x[start : start + batch], train=True, logits=True)
            _, dlogits = self.loss(logits, y[start : start + batch])
            self.optimizer.step(self.model.weights, backprop(dlogits))

    def infer(self, x, batch):
        for start in range(0, len(x), batch):
            self.model.forward(x[start : start + batch], train=False, logits=True)


def torch_net(model):
    """The PyTorch twin of a cnnkit model, with the same weights: ``cnnkit.torch.to_module`` (each
    layer's own ``to_torch`` hook), from logits (CnnkitError: a layer has no hook)."""
    from cnnkit.torch import to_module

    return to_module(model, logits=True)


class TorchRunner:
    """A cnnkit model's PyTorch twin, starting from the same initial weights."""

    def __init__(self, model, lr: float = 0.005):
        import torch

        self.torch = torch
        self.net = torch_net(model)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)

    def train(self, x, y, batch):
        torch = self.torch
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        self.net.train()  # batch statistics and dropout, as cnnkit's train=True
        for start in range(0, len(x), batch):
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.net(xt[start : start + batch]), yt[start : start + batch])
            loss.backward()
            self.optimizer.step()

    def infer(self, x, batch):
        torch = self.torch
        xt = torch.from_numpy(x)
        self.net.eval()  # running statistics, no dropout, as cnnkit's train=False
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                self.net(xt[start : start + batch])


def _rate(fn, images: int) -> float:
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def throughput(quick: bool, rounds: int = 5, archs: list[str] | None = None) -> list[dict]:
    import torch

    from cnnkit.errors import CnnkitError
    from cnnkit.runtime.parallel import num_threads

    threads = num_threads()  # PyTorch gets as many threads as cnnkit splits batches over
    torch.set_num_threads(threads)
    onnx = sibling("bench_infer") if sibling("bench_infer").available() else None
    x, y = load_images(20_000)
    rounds = 1 if quick else rounds
    # (mode, batch, images per round): enough images that a round lasts about a second or more
    cases = [("train", 1, 300 if quick else 2000), ("train", 16, 1024 if quick else 4096), ("train", 32, 1024 if quick else 8192),
             ("train", 64, 1024 if quick else 8192), ("infer", 256, 2048 if quick else 16384)]
    results = []
    for arch, spec in ARCHITECTURES.items():
        if archs and arch not in archs:
            continue
        ours = CnnkitRunner(spec)
        if ours.model.input_shape != (1, 28, 28):
            raise SystemExit(f"bench: architecture {arch!r} takes input {list(ours.model.input_shape)}, the benchmark feeds Fashion-MNIST (1, 28, 28)")
        try:
            theirs = TorchRunner(network(spec))
        except CnnkitError as exc:
            print(f"bench: {arch}: skipped, {exc}", file=sys.stderr)
            continue
        own = ours.model.spec.train.batch_size  # the spec's own batch too (the best spec trains at 128)
        extra = [] if any(b == own for m, b, _ in cases if m == "train") else [("train", own, 1024 if quick else 8192)]
        for mode, batch, images in sorted(cases + extra, key=lambda c: (c[0] != "train", c[1])):
            xs, ys = x[:images], y[:images]
            # one untimed warm-up batch each (allocator, oneDNN kernel selection)
            for runner in (ours, theirs):
                runner.train(xs[:batch], ys[:batch], batch) if mode == "train" else runner.infer(xs[:batch], batch)
            runners = [("cnnkit", ours), ("pytorch", theirs)]
            if mode == "infer" and onnx is not None:  # the same model exported to ONNX, on the same raw pixels
                runners.append(("onnxruntime", onnx.OrtRunner(ours.model, xs, threads)))
                runners[-1][1].infer(xs[:batch], batch)
            rates = {name: [] for name, _ in runners}
            for _ in range(rounds):
                for name, runner in runners:
                    work = (lambda r=runner: r.train(xs, ys, batch)) if mode == "train" else (lambda r=runner: r.infer(xs, batch))
                    rates[name].append(_rate(work, images))
            medians = {name: statistics.median(r) for name, r in rates.items()}
            row = {"architecture": arch, "mode": mode, "batch": batch, "images": images, "rounds": rounds, "threads": threads,
                   **{f"{name}_images_per_s": round(rate, 1) for name, rate in medians.items()},
                   "ratio": round(medians["cnnkit"] / medians["pytorch"], 3), "load_average": [round(v, 2) for v in os.getloadavg()]}
            if "onnxruntime" in medians:
                row["ratio_onnxruntime"] = round(medians["cnnkit"] / medians["onnxruntime"], 3)
            results.append(row)
    return results


def machine() -> dict:
    """What the figures depend on: CPU model and caches, numpy and its BLAS, cnnkit's tuner picks."""
    import ctypes

    from cnnkit.runtime import allocator, parallel, tuning
    from cnnkit.layers import conv_blocks, conv_gemm

    try:
        from cnnkit.layers.kernels import winograd
    except ImportError:  # a cnnkit from before the Winograd path (the bench also measures older trees)
        winograd = None
    try:
        from cnnkit.layers.kernels import winograd_pool
    except ImportError:  # before the pooled inference step
        winograd_pool = None

    info: dict = {"cpu_model": tuning.cpu_model(), "caches": tuning.cache_sizes(), "cores": os.cpu_count(),
                  "threads": parallel.num_threads(), "numpy": np.__version__}
    try:  # lscpu's "Model name" (the same text as /proc/cpuinfo, where lscpu exists)
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.SubprocessError, StopIteration):
        pass
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info["blas"] = {"name": blas.get("name"), "version": blas.get("version")}
    for path in parallel._openblas_paths():  # the OpenBLAS loaded now: its kernel choice for this CPU
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", "")):
            config = getattr(lib, f"{prefix}get_config{suffix}", None)
            if config is not None:
                config.restype = ctypes.c_char_p
                info["blas"]["config"] = config().decode()
                break
        if "config" in info["blas"]:
            break
    picks = tuning.picks()
    picks["split_min_macs"], picks["chunk"] = conv_blocks.SPLIT_MIN_MACS, conv_blocks.CHUNK
    # cnnkit tunes glibc's malloc for the whole process at its first forward pass (cnnkit.runtime.allocator),
    # so PyTorch, measured in the same process, runs under the same malloc settings.
    picks["malloc_tuned"] = allocator.keep_freed_memory()
    picks["spare_cores_now"] = parallel.spare_cores()  # False: load too high, convolutions do not split now
    picks["conv_strategies"] = {}
    for arch, spec in ARCHITECTURES.items():
        model = network(spec)
        for r in model.layers:
            if r.entry.type == "conv2d" and r.layer.params.stride == 1:
                c, f, k = r.input_shape[0], r.layer.params.filters, r.layer.params.kernel_size
                _, pad_w, out_h, _ = r.layer._geometry(r.input_shape)
                if winograd is not None and winograd.suits(c, k, f) and winograd_pool is None:
                    picks["conv_strategies"][f"{arch}.{r.index}"] = "Winograd F(2x2,3x3) (kernels/winograd); groups of 4 images split over threads"
                    continue
                if winograd is not None and winograd.suits(c, k, f):
                    first = next(b for b in range(1, 64) if winograd.pays_in_training(b, out_h, r.output_shape[2]))
                    pooled = winograd_pool.tile_size(c, f, out_h, r.output_shape[2])
                    when = "at every batch" if first == 1 else f"from batch {first} (the direct path below)"
                    picks["conv_strategies"][f"{arch}.{r.index}"] = (
                        f"training: Winograd F(2x2,3x3) (kernels/winograd) {when}, groups of {winograd.GROUP} images; "
                        f"inference before relu + 2x2 pool: pooled F({pooled}x{pooled},3x3) (kernels/winograd_pool)")
                    continue
                if conv_gemm.uses_batched(c, k, f, out_h * (r.input_shape[2] + sum(pad_w))):
                    strategy = "images side by side (conv_gemm)"
                else:
                    strategy = "full im2col" if conv_blocks.copies_kernel_rows(c, k, f) else "shared kernel rows"
                macs = out_h * (r.input_shape[2] + sum(pad_w)) * f * c * k * k  # as Conv2D computes it
                splits = ", ".join(f"batch {b}: {len(conv_blocks.image_ranges(b, macs))} ranges" for b in (8, 16))
                picks["conv_strategies"][f"{arch}.{r.index}"] = f"{strategy}; images split over threads at {splits}"
    info["tuning"] = picks
    return info


def rss_child(framework: str, steps: int) -> None:
    """Child process: load the full training set, train `steps` batches of 64, print peak RSS in MiB."""
    x, y = load_images()
    if framework == "cnnkit":
        runner = CnnkitRunner()
    else:
        import torch

        from cnnkit.runtime.parallel import num_threads

        torch.set_num_threads(num_threads())

        runner = TorchRunner(network(SEED_SPEC))
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Loading (decompressing, converting) peaks higher than training does, which would hide training's
    # own peak; Linux resets the peak (VmHWM) on writing 5 to clear_refs, so training's is measured alone.
    reset = _reset_peak_rss()
    runner.train(x[: 64 * steps], y[: 64 * steps], 64)
    peak = _vm_hwm_mib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"framework": framework, "peak_rss_mib": round(peak, 1), "peak_rss_mib_before_training": round(after_load, 1), "training_peak_alone": reset}))


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _vm_hwm_mib() is not None
    except OSError:
        return False


def _vm_hwm_mib() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def peak_rss(quick: bool) -> dict[str, float]:
    out = {}
    for framework in ("cnnkit", "pytorch"):
        done = subprocess.run([sys.executable, __file__, "--rss-child", framework, "--rss-steps", "20" if quick else "200"], capture_output=True, text=True, check=True)
        out[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def time_to_accuracy(spec_path: Path, target: float) -> dict:
    """Wall time from before loading the data until the first epoch whose test accuracy >= target.

    Included: reading the IDX files, preprocessing, building the model, training, and the test-set
    evaluation after every epoch. Not included: interpreter start-up and imports.
    """
    import cnnkit
    from cnnkit.data import load_fashion_mnist
    from cnnkit.training import fit

    class Reached(Exception):
        pass

    start = time.perf_counter()
    model = cnnkit.build(spec_path)
    d = model.spec.data
    data = load_fashion_mnist(d.source.dir, d.train_limit, d.test_limit)
    epochs = []

    def on_epoch(record):
        epochs.append({"epoch": record.epoch, "test_accuracy": round(record.test_accuracy, 4), "wall_s": round(time.perf_counter() - start, 1)})
        if record.test_accuracy >= target:
            raise Reached

    try:
        fit(model, data, on_epoch=on_epoch)
        reached = None
    except Reached:
        reached = epochs[-1]["wall_s"]
    return {"spec": str(spec_path.relative_to(ROOT)), "target": target, "seconds_to_target": reached, "epochs": epochs,
            "included": "data loading, preprocessing, training, per-epoch test evaluation (not interpreter start-up)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer images, one round)")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHITECTURES), help="measure only this architecture (repeatable; default: all)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per figure (median reported; default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--bundle", type=Path, help="the bundle predict_proba and onnxruntime run (default: the best spec, untrained)")
    parser.add_argument("--profile", action="store_true", help="per-step, per-pass ms per 128 images of the best net (or --arch), cnnkit and PyTorch, one thread")
    parser.add_argument("--time-to-accuracy", action="store_true", help=f"time {FAST_SPEC.name} until test accuracy >= {TARGET_ACCURACY}")
    parser.add_argument("--spec", type=Path, default=FAST_SPEC, help="spec for --time-to-accuracy")
    parser.add_argument("--target", type=float, default=TARGET_ACCURACY,
                        help=f"test accuracy for --time-to-accuracy (default {TARGET_ACCURACY}; the best spec's is 0.93)")
    parser.add_argument("--rss-child", choices=["cnnkit", "pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--rss-steps", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_steps)
        return
    report = {"load_average": os.getloadavg(), "machine": machine()}
    if args.profile:
        report["profile"] = {arch: sibling("bench_profile").profile(ARCHITECTURES[arch], args.rounds) for arch in (args.arch or ["best"])}
    elif args.time_to_accuracy:
        report["time_to_accuracy"] = time_to_accuracy(args.spec.resolve(), args.target)
    else:
        report["throughput"] = throughput(args.quick, args.rounds, args.arch)
        if sibling("bench_infer").available():
            import cnnkit

            model = cnnkit.load(args.bundle) if args.bundle else network(ARCHITECTURES["best"])
            report["predict_proba"] = sibling("bench_infer").predict(model, str(args.bundle or "best spec, untrained"), load_images(4096)[0], args.rounds)
        report["peak_rss_mib_train_batch64"] = peak_rss(args.quick)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    print(f"CPU: {m['cpu_model']}, {m['cores']} cores, caches {', '.join(f'{k} {v // 1024} KiB' for k, v in m['caches'].items()) or 'not reported'}")
    print(f"numpy {m['numpy']}, BLAS {m['blas'].get('name')} {m['blas'].get('version')} ({m['blas'].get('config', 'config unknown')})")
    print(f"tuning: {json.dumps(m['tuning'])}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in report['load_average'])}")
    for row in report.get("throughput", []):
        print(f"{row['architecture']:>6} {row['mode']:5} batch {row['batch']:3}: cnnkit {row['cnnkit_images_per_s']:9,.0f} img/s   "
              f"pytorch {row['pytorch_images_per_s']:9,.0f} img/s   ratio {row['ratio']:.2f}"
              + (f"   onnxruntime {row['onnxruntime_images_per_s']:9,.0f} img/s   ratio {row['ratio_onnxruntime']:.2f}" if "onnxruntime_images_per_s" in row else "")
              + f"   ({row['threads']} thread{'s' if row['threads'] != 1 else ''}, load {row['load_average'][0]:.2f})")
    if "predict_proba" in report:
        p = report["predict_proba"]
        print(f"predict_proba vs onnxruntime on the same exported model ({p['model']}, {p['threads']} threads):")
        for row in p["rows"]:
            print(f"  {row['batch']:5} images per call: predict_proba {row['predict_proba_images_per_s']:9,.0f} img/s   "
                  f"onnxruntime {row['onnxruntime_images_per_s']:9,.0f} img/s   ratio {row['ratio']:.2f}")
    if "peak_rss_mib_train_batch64" in report:
        rss = report["peak_rss_mib_train_batch64"]
        for name, r in rss.items():
            what = "peak RSS while training" if r.get("training_peak_alone") else "peak RSS (data loading included)"
            print(f"{what} of {name}, at batch 64 with the full dataset loaded: {r['peak_rss_mib']} MiB "
                  f"(peak while loading the data: {r['peak_rss_mib_before_training']} MiB)")
    for arch, tables in report.get("profile", {}).items():
        print(f"\n{arch} net, {ARCHITECTURES[arch].name}")
        sibling("bench_profile").print_profile(tables)
    if "time_to_accuracy" in report:
        t = report["time_to_accuracy"]
        for e in t["epochs"]:
            print(f"epoch {e['epoch']}: test accuracy {e['test_accuracy']:.4f} at {e['wall_s']:.1f}s")
        verdict = f"{t['seconds_to_target']:.1f}s" if t["seconds_to_target"] is not None else "not reached"
        print(f"time to test accuracy >= {t['target']}: {verdict} ({t['included']})")


if __name__ == "__main__":
    from cnnkit.errors import CnnkitError

    try:
        main()
    except CnnkitError as error:  # a bad setting (CNNKIT_NUM_THREADS=abc, ...): one line, as the cnnkit command says it
        sys.exit(f"error: {error}")
