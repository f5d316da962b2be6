"""What `cnnkit inspect` shows: a JSON-ready summary of a checked bundle (imports no layer code)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..plugins import provenance
from .codec import FORMAT, Bundle


def weight_fingerprint(array: np.ndarray) -> dict[str, Any]:
    """sha256 of the weight's stored bytes (little-endian, C order) and the sum of its values.

    The sum adds the values as float64 one by one in storage order (no pairwise or compensated
    summation), so any reader that follows docs/FORMAT.md gets exactly the same number.
    """
    array = np.asarray(array)
    stored = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    flat = array.reshape(-1).astype(np.float64)
    total = float(np.cumsum(flat)[-1]) if flat.size else 0.0
    return {"sha256": hashlib.sha256(stored.tobytes()).hexdigest(), "sum": total}



def describe(bundle: Bundle, source: str = "bundle") -> dict[str, Any]:
    """A JSON-ready summary of checked contents (what `cnnkit inspect` shows); imports no layer code."""
    spec = bundle.spec
    matches = provenance.resolve(spec["layers"], bundle.providers)  # entry-point metadata only
    layers = []
    for i, layer in enumerate(spec["layers"]):
        provider = bundle.providers[layer["type"]]
        found = matches[layer["type"]]
        count = sum(int(w.size) for name, w in bundle.weights.items() if name.partition(".")[0] == str(i))
        layers.append({"index": i, "type": layer["type"], "config": {k: v for k, v in layer.items() if k != "type"},
                       "params": count, "provider": f"{provider['dist']} {provider['version']}",
                       "installed": found.installed.provider if found.installed else None, "provenance": found.status})
    weights = [{"name": name, "dtype": w.dtype.name, "shape": list(w.shape), "size": int(w.size), "bytes": int(w.nbytes), **weight_fingerprint(w)}
               for name, w in bundle.weights.items()]
    return {
        "source": source,
        "format": FORMAT,
        "version": f"{bundle.version[0]}.{bundle.version[1]}",
        "sha256": bundle.sha256,
        "name": spec.get("name"),
        "input_shape": spec["input"]["shape"],
        "preprocess": spec["input"].get("preprocess"),
        "classes": bundle.classes,
        "layers": layers,
        "total_params": sum(w["size"] for w in weights),
        "providers": bundle.providers,
        "predict": spec.get("predict"),
        "train": spec.get("train"),
        "training": bundle.training,
        "weights": weights,
    }

