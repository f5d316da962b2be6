"""Inference against onnxruntime: ``predict_proba`` and the same model exported to ONNX by cnnkit's
exporter, run by onnxruntime on the same images (``tools/bench.py``'s onnxruntime column and its
``predict_proba`` rows). Needs the extra ``cnnkit[onnx]``; without onnxruntime these figures are
skipped.

The ONNX graph takes raw pixels and applies the bundle's preprocessing, as ``predict_proba`` does;
onnxruntime gets as many intra-op threads as cnnkit uses and its default graph optimisations (it
fuses batch norm into convolutions too). Rounds alternate between the two; the median is reported.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

PREDICT_BATCHES = (1, 64, 1024)


def available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(model, threads: int):
    """An onnxruntime session running ``model`` exported by ``cnnkit.export.onnx`` (float32 pixels)."""
    import onnxruntime as ort

    from cnnkit.export.onnx import to_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(to_onnx(model, "float32").SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_session(sess, pixels: np.ndarray, batch: int) -> None:
    for start in range(0, len(pixels), batch):
        sess.run(["probabilities"], {"pixels": pixels[start : start + batch]})


def predict_rates(model, pixels: np.ndarray, threads: int, rounds: int) -> list[dict]:
    """Images/s of ``model.predict_proba`` and of onnxruntime on the exported model, called with
    ``batch`` images at a time, for each of PREDICT_BATCHES. ``pixels`` are raw (N, C, H, W) float32."""
    sess = session(model, threads)
    rows = []
    for batch in PREDICT_BATCHES:
        images = pixels[: max(batch * 4, 512)] if batch > 1 else pixels[:400]
        ours = lambda: [model.predict_proba(images[s : s + batch]) for s in range(0, len(images), batch)]  # noqa: E731
        theirs = lambda: run_session(sess, images, batch)  # noqa: E731
        ours(), theirs()  # warm-up
        rates = {"cnnkit": [], "onnxruntime": []}
        for _ in range(rounds):
            for name, fn in (("cnnkit", ours), ("onnxruntime", theirs)):
                start = time.perf_counter()
                fn()
                rates[name].append(len(images) / (time.perf_counter() - start))
        a, b = statistics.median(rates["cnnkit"]), statistics.median(rates["onnxruntime"])
        rows.append({"batch": batch, "images": len(images), "predict_proba_images_per_s": round(a, 1), "onnxruntime_images_per_s": round(b, 1), "ratio": round(a / b, 3)})
    return rows


class OrtRunner:
    """onnxruntime on a cnnkit model exported by cnnkit's ONNX exporter, for ``bench.throughput``. Its
    graph takes raw pixels: ``infer(x, batch)`` runs the raw pixels of x, a prefix of ``images``."""

    def __init__(self, model, images: np.ndarray, threads: int):
        self.session = session(model, threads)
        self.pixels = raw_pixels(model, images)

    def infer(self, x, batch):
        run_session(self.session, self.pixels[: len(x)], batch)


def raw_pixels(model, x: np.ndarray) -> np.ndarray:
    """Preprocessed images back to the raw pixels the ONNX graph and predict_proba take."""
    pre = model.spec.input.preprocess
    return (x + np.float32(pre.subtract)) * np.float32(pre.divide)


def predict(model, name: str, images: np.ndarray, rounds: int) -> dict:
    """predict_proba at 1, 64 and 1,024 images per call against onnxruntime on the same model
    (``images`` preprocessed, as tools/bench.py loads them)."""
    from cnnkit.runtime.parallel import num_threads

    rows = predict_rates(model, raw_pixels(model, images), num_threads(), rounds)
    return {"model": name, "threads": num_threads(), "rows": rows}
