"""Data benchmarks: peak memory of training on a memory-mapped dataset, and image-folder load times.

    python tools/bench_data.py --mmap 1000000        # N random 28x28 images in an uncompressed .npz, one epoch
    python tools/bench_data.py --image-folder         # the 70,000 real Fashion-MNIST images as PNGs, loaded twice

Both work in a temporary folder (or --work DIR, kept) and print one line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEC = {
    "name": "bench-mmap",
    "input": {"shape": [1, 28, 28]},
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": "valid"},
        {"type": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
    "train": {"epochs": 1, "batch_size": 256, "optimizer": {"type": "sgd", "lr": 0.05}, "seed": 0},
}


def write_big_npz(path: Path, n: int, test: int = 10_000) -> None:
    """n learnable 28x28 images (a bright square per class over noise), written without holding them in memory."""
    scratch = path.with_suffix(".x.npy")
    x = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n).astype(np.uint8)
    for start in range(0, n, 50_000):
        part = rng.integers(0, 60, (min(50_000, n - start), 28, 28)).astype(np.uint8)
        for k in range(10):
            r, c = divmod(k, 4)
            part[y[start : start + len(part)] == k, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7] = 220
        x[start : start + len(part)] = part
    x.flush()
    np.savez(path, x_train=x, y_train=y, x_test=x[:test], y_test=y[:test])  # streamed from the map, 16 MiB at a time
    del x
    scratch.unlink()


def bench_mmap(n: int, work: Path) -> None:
    data = work / f"big-{n}.npz"
    if not data.is_file():
        started = time.perf_counter()
        write_big_npz(data, n)
        print(f"wrote {data} ({data.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.0f}s")
    spec = work / "spec.json"
    spec.write_text(json.dumps({**SPEC, "data": {"dataset": "npz", "path": str(data)}}))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnkit.cli", "run", str(spec), "--out", str(work / "big.cnnkit"), "--force", "--run-dir", str(work / "runs")], check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{n:,} images ({n * 784 / 2**20:,.0f} MiB as uint8, {n * 784 * 4 / 2**30:.1f} GiB as float32): "
          f"peak RSS of `cnnkit run` {peak:.2f} GiB, {time.perf_counter() - started:.0f}s")


def bench_image_folder(work: Path) -> None:
    from PIL import Image

    from cnnkit.data import load_fashion_mnist

    root = work / "fashion-png"
    if not root.is_dir():
        real = load_fashion_mnist()
        images = np.concatenate([real.train_images, real.test_images])
        labels = np.concatenate([real.train_labels, real.test_labels])
        started = time.perf_counter()
        for k in range(10):
            (root / f"{k}").mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / f"{label}" / f"{i:05d}.png")
        print(f"wrote {len(labels):,} PNGs in {time.perf_counter() - started:.0f}s")
    code = ("import time; from cnnkit.data import load_dataset; from cnnkit.spec import validate_data; t = time.perf_counter(); "
            f"d = load_dataset(validate_data({{'dataset': 'image-folder', 'path': {str(root)!r}}}), (1, 28, 28)); "
            "print(f'{len(d.train_labels) + len(d.test_labels):,} images in {time.perf_counter() - t:.1f}s')")
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
    for run in ("first run (decode + cache)", "cached"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        print(f"image-folder, {run}: {result.stdout.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mmap", type=int, metavar="N", help="train one epoch on N memory-mapped images")
    parser.add_argument("--image-folder", action="store_true", help="time loading 70,000 PNGs, first and cached")
    parser.add_argument("--work", type=Path, help="folder for the generated data (kept); default: a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.mmap:
            bench_mmap(args.mmap, work)
        if args.image_folder:
            bench_image_folder(work)


if __name__ == "__main__":
    main()
