"""ONNX export: one self-contained graph from raw pixels to class probabilities (opset 17).

The graph's input ``pixels`` has shape (N, *input_shape) — (N, C, H, W) for image models — with a
dynamic batch N, and holds raw pixel values of one dtype chosen at export: uint8 (default) or
float32. The graph casts to float32, applies the bundle's preprocessing (x / divide - subtract),
runs every layer through its ``to_onnx`` hook (a final softmax layer is skipped, exactly as
``Model.predict_proba`` skips it) and ends in ``Flatten`` + ``Softmax``: output ``probabilities``,
(N, classes), equal to ``predict_proba``. With the spec's test-time augmentation (``predict.tta``)
the views of the batch are stacked along N before preprocessing (flips and shifts of the raw
pixels, black flowing in), run through the layers once, and their probabilities averaged
(``tta=False`` leaves them out). The model's ``metadata_props`` carry the class names, the spec,
the layer providers and the views the graph averages as JSON strings (keys ``cnnkit.*``).

Requires the extra ``cnnkit[onnx]``; onnx is imported when an export starts, never before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CnnkitError
from ..layers.kernels.fold import fold_batchnorm
from . import call_hook, layer_weights, require, require_hooks

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: runtimes from onnxruntime 1.13 on read the file
INPUT_DTYPES = {"uint8": np.uint8, "float32": np.float32}
PURPOSE = "export to ONNX"


class OnnxGraph:
    """The helper a layer's ``to_onnx(g, x, weights, input_shape)`` hook builds its nodes with.

    Names are made unique and prefixed with the layer index (``"3.kernel"``), so hooks only give
    short hints. ``opset`` is the opset the graph declares; use only ops it defines.
    """

    opset = OPSET

    def __init__(self, onnx):
        self._onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()
        self.prefix = ""

    def name(self, hint: str) -> str:
        """A tensor name not used yet, from ``hint`` and the current layer prefix."""
        base = f"{self.prefix}{hint}"
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def constant(self, array, hint: str = "const") -> str:
        """Add ``array`` (float arrays are stored as float32) as an initializer; returns its name."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self.name(hint)
        self.initializers.append(self._onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str | None = None, **attributes) -> str:
        """Add one node with a single output; returns the output's name. ``attributes`` as in ONNX."""
        output = self.name(hint or op_type.lower())
        self.nodes.append(self._onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output


def to_onnx(model, input_dtype: str = "uint8", tta: bool = True):
    """The checked ``onnx.ModelProto`` of ``model`` (see the module docstring for the graph's contract)."""
    return _graph(model, input_dtype, tta)[0]


def _graph(model, input_dtype: str, tta: bool = True):
    """(the checked proto, [(resolved layer, the name of its output tensor)])."""
    (onnx,) = require("onnx", extra="onnx", purpose="ONNX export")
    if input_dtype not in INPUT_DTYPES:
        raise CnnkitError(f"input dtype must be one of {', '.join(INPUT_DTYPES)}. Received: {input_dtype!r}")
    g = OnnxGraph(onnx)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(INPUT_DTYPES[input_dtype]))
    pixels = onnx.helper.make_tensor_value_info("pixels", elem, ["N", *model.input_shape])
    g._used.add("pixels")
    pre = model.spec.input.preprocess
    x = g.node("Cast", ["pixels"], "pixels_float", to=onnx.TensorProto.FLOAT)
    augment = model.spec.predict if tta and model.spec.predict.tta else None
    if augment is not None:
        x = _stack_views(g, x, augment, model.input_shape)
    x = g.node("Div", [x, g.constant(np.float32(pre.divide), "divide")], "scaled")
    x = g.node("Sub", [x, g.constant(np.float32(pre.subtract), "subtract")], "preprocessed")
    count = len(model.layers) - 1 if model.ends_with_softmax else len(model.layers)
    require_hooks(model.layers[:count], "to_onnx", PURPOSE)  # every layer without one named at once
    outputs = []
    for step in model.steps(count, train=False):
        # A convolution with the batch norm folded in runs as one convolution in predict_proba;
        # the graph holds the same folded weights, so the two compute the same thing.
        folded = step.kind in ("conv_bn", "conv_bn_relu_pool")
        for i in step.indices[:1] + step.indices[2:] if folded else step.indices:
            r = model.layers[i]
            g.prefix = f"{r.index}."
            weights = layer_weights(model, r)
            fold_here = folded and i == step.indices[0]
            if fold_here:
                bn = model.layers[i + 1]
                kernel, bias = fold_batchnorm(weights["kernel"], weights.get("bias"), layer_weights(model, bn), bn.layer.params.eps)
                x = step.conv.to_onnx(g, x, {"kernel": kernel, "bias": bias}, r.input_shape)
            else:
                x = call_hook(r, "to_onnx", PURPOSE, g, x, weights, r.input_shape)
            if not isinstance(x, str):
                raise CnnkitError(f"cannot {PURPOSE}: the to_onnx hook of layer {r.index} ({r.type!r}, from {r.entry.provider}) returned {type(x).__name__}, not a tensor name")
            if fold_here:  # the graph has no tensor for the convolution alone: its batch norm's output is compared
                outputs += [(r, None), (model.layers[i + 1], x)]
            else:
                outputs.append((r, x))
    g.prefix = ""
    x = g.node("Flatten", [x], "logits", axis=1)
    classes = len(model.classes)
    if augment is None:
        g.nodes.append(onnx.helper.make_node("Softmax", [x], ["probabilities"], name="probabilities", axis=1))
    else:  # (views * N, classes) -> (views, N, classes) -> the mean over the views
        x = g.node("Softmax", [x], "view_probabilities", axis=1)
        x = g.node("Reshape", [x, g.constant(np.array([augment.views, -1, classes], np.int64), "views_shape")], "by_view")
        g.nodes.append(onnx.helper.make_node("ReduceMean", [x], ["probabilities"], name="probabilities", axes=[0], keepdims=0))
    probabilities = onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", classes])
    graph = onnx.helper.make_graph(g.nodes, model.spec.name or "cnnkit", [pixels], [probabilities], g.initializers)
    proto = onnx.helper.make_model(graph, producer_name="cnnkit", producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    providers = {}
    for r in model.layers:
        providers.setdefault(r.type, {"dist": r.entry.dist, "version": r.entry.version})
    onnx.helper.set_model_props(proto, {
        "cnnkit.classes": json.dumps(list(model.classes)),
        "cnnkit.spec": json.dumps(model.spec.to_dict()),
        "cnnkit.providers": json.dumps(providers),
        "cnnkit.input_dtype": input_dtype,
        "cnnkit.tta": json.dumps(list(augment.tta) if augment is not None else []),
    })
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError: a hook built a bad graph
        raise CnnkitError(f"cannot {PURPOSE}: the graph fails onnx.checker ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})") from exc
    return proto, outputs


def _stack_views(g: OnnxGraph, x: str, tta, input_shape: tuple[int, ...]) -> str:
    """The views of the raw-pixel batch ``x`` (N, C, H, W) that ``tta`` names, stacked along N in
    cnnkit/runtime/tta.py's order. Shifts pad with 0 (black) before cropping back to H x W; shifting
    raw pixels then preprocessing gives the bytes preprocessing then filling with black does."""
    from ..runtime.tta import SHIFT_DIRECTIONS

    h, w = input_shape[-2:]
    axes = g.constant(np.array([2, 3], np.int64), "hw_axes")
    views = []
    for flipped in (False, True) if tta.hflip else (False,):
        base = x
        if flipped:
            base = g.node("Slice", [x, g.constant(np.array([-1], np.int64), "flip_start"), g.constant(np.array([-(1 << 62)], np.int64), "flip_end"),
                                    g.constant(np.array([3], np.int64), "flip_axis"), g.constant(np.array([-1], np.int64), "flip_step")], "hflip")
        views.append(base)
        n = tta.shift
        if not n:
            continue
        padded = g.node("Pad", [base, g.constant(np.array([0, 0, n, n, 0, 0, n, n], np.int64), "shift_pads")], "padded")
        for rows, columns in SHIFT_DIRECTIONS:
            # content moved down by `rows` = the window starting `rows` above the original's corner
            top, left = n - rows * n, n - columns * n
            starts = g.constant(np.array([top, left], np.int64), "shift_start")
            ends = g.constant(np.array([top + h, left + w], np.int64), "shift_end")
            views.append(g.node("Slice", [padded, starts, ends, axes], "shifted"))
    return g.node("Concat", views, "views", axis=0)


def verify(model, proto, input_dtype: str = "uint8", samples: int = 4, tolerance: float = 1e-4, tta: bool = True, layer_outputs=None) -> float:
    """Run ``proto`` in onnxruntime on random pixels and compare with ``model.predict_proba``.

    Returns the largest absolute difference; raises CnnkitError when it exceeds ``tolerance`` (a
    layer's hook that does not match its forward), so a wrong graph is never written. Given
    ``layer_outputs`` ([(resolved layer, its output tensor's name)], as the exporter records them),
    the error names the first layer whose ONNX output differs from its forward's.
    """
    (ort,) = require("onnxruntime", extra="onnx", purpose="ONNX export")
    rng = np.random.default_rng(0)
    shape = (samples, *model.input_shape)
    pixels = rng.integers(0, 256, shape).astype(INPUT_DTYPES[input_dtype])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"pixels": pixels})[0]
    expected = model.predict_proba(pixels, tta=tta)
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        culprit = _first_layer_that_differs(model, proto, pixels, layer_outputs, tolerance) if layer_outputs else None
        raise CnnkitError(culprit or f"cannot {PURPOSE}: onnxruntime's probabilities differ from cnnkit's by {diff:.3g} (> {tolerance:g}) on random input; "
                                     f"a layer's to_onnx hook does not match its forward")
    return diff


def _first_layer_that_differs(model, proto, pixels, layer_outputs, tolerance: float) -> str | None:
    """The message naming the first layer whose ONNX output differs from cnnkit's, comparing layer by
    layer on the same pixels (each layer's tensor made a graph output), or None if none does."""
    import onnx
    import onnxruntime as ort

    from ..layers.base import Context

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    names = list(dict.fromkeys(name for _, name in layer_outputs if name is not None))  # a hook may return its input's name
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in known)
    values = dict(zip(names, ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, {"pixels": pixels})))
    x = model.preprocess(pixels)
    for r, name in layer_outputs:
        x = r.layer.forward(layer_weights(model, r), x, Context())[0]
        if name is None:  # a convolution folded into the batch norm after it
            continue
        theirs = values[name][: len(x)]  # with test-time augmentation, the first view is the images as they are
        where = f"cannot {PURPOSE}: the to_onnx hook of layer {r.index} ({r.entry.type!r}, from {r.entry.provider}) does not match its forward"
        if theirs.shape != x.shape:
            return f"{where}: its ONNX output has shape {list(theirs.shape)}, forward's {list(x.shape)} on random input"
        scale = max(1.0, float(np.abs(x).max()))
        worst = float(np.abs(theirs - x).max())
        if not worst <= tolerance * scale:
            return f"{where}: outputs differ by up to {worst:.3g} on random input (forward's values reach {float(np.abs(x).max()):.3g}); the layers before it agree"
    return None


def save_onnx(model, path: str | Path, input_dtype: str = "uint8", tta: bool = True) -> Path:
    """Build, check, verify in onnxruntime, then write the ONNX file atomically (temp file + rename)."""
    from ..bundle import write_atomic

    proto, layer_outputs = _graph(model, input_dtype, tta)
    verify(model, proto, input_dtype, tta=tta, layer_outputs=layer_outputs)
    try:
        return write_atomic(path, proto.SerializeToString())
    except OSError as exc:
        raise CnnkitError(f"cannot write {path}: {exc.strerror or exc}") from None
