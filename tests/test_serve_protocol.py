"""The serving rules without a server: requests checked by cnnkit.serve.protocol, the page's file
reading, the models a server loads, and `cnnkit serve` failing before it listens."""

from __future__ import annotations

import json
import socket
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data.images import read_images_for
from cnnkit.serve import page, protocol
from cnnkit.serve.models import load_models, parse_target
from cnnkit.serve.protocol import RequestError, Signature, classify, encode_response, parse_infer
from conftest import TINY_SPEC, write_idx

GRAY = Signature("tiny", (1, 28, 28), tuple(f"c{i}" for i in range(10)))
RGB = Signature("rgb", (3, 8, 8), ("cat", "dog"))


def request(shape, data, datatype="UINT8", **extra) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}], **extra}).encode()


def binary(shape, array: np.ndarray, datatype="UINT8") -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    return header + array.tobytes(), str(len(header))


def refused(body: bytes, header_length=None, signature=GRAY) -> str:
    with pytest.raises(RequestError) as caught:
        parse_infer(body, header_length, signature)
    assert caught.value.status == 400
    return str(caught.value)


def test_metadata_states_shapes_with_minus_one_for_the_batch():
    assert GRAY.shapes() == [[-1, 1, 28, 28], [-1, 28, 28]]
    assert RGB.shapes() == [[-1, 3, 8, 8]]  # [-1, H, W] only for one channel
    assert RGB.metadata() == {"name": "rgb", "versions": ["1"], "platform": "cnnkit",
                              "inputs": [{"name": "input", "datatype": "UINT8", "shape": [-1, 3, 8, 8]}],
                              "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]}


def test_json_data_flat_or_fully_nested_gives_the_same_images():
    x = np.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) % 256
    flat = parse_infer(request([2, 3, 8, 8], x.ravel().tolist(), id="7"), None, RGB)
    nested = parse_infer(request([2, 3, 8, 8], x.tolist()), None, RGB)
    assert flat.id == "7" and nested.id is None
    assert flat.images.dtype == np.uint8 and np.array_equal(flat.images, x) and np.array_equal(nested.images, x)
    assert "nested but not as the shape [2, 3, 8, 8]" in refused(request([2, 3, 8, 8], x.reshape(6, 8, 8).tolist()), signature=RGB)
    fp32 = parse_infer(request([1, 28, 28], [0.5] * 784, "FP32"), None, GRAY)
    assert fp32.images.dtype == np.float32 and fp32.images.shape == (1, 28, 28)


def test_binary_tensors_are_read_in_place_little_endian():
    x = np.linspace(0, 255, 2 * 784, dtype="<f4").reshape(2, 1, 28, 28)
    body, length = binary([2, 1, 28, 28], x, "FP32")
    parsed = parse_infer(body, length, GRAY)
    assert parsed.images.dtype == np.dtype("<f4") and np.array_equal(parsed.images, x)
    assert "binary_data_size" in refused(body[:-4], length)
    assert "needs 6,272 bytes. Received: 784 bytes" in refused(*binary([2, 1, 28, 28], x.astype(np.uint8)[:1], "FP32"))
    assert "no input has parameters.binary_data_size" in refused(request([1, 28, 28], [0] * 784) + b"xx", str(len(request([1, 28, 28], [0] * 784))))


@pytest.mark.parametrize("body, message", [
    (b'{"id": "\x80"}', "malformed JSON in the request: not UTF-8 text"),
    (b"[" * 100_000, "malformed JSON in the request: nested too deeply"),
    (b"null", "the request must be a JSON object. Received: null"),
    (request([1, 28, 28], [0] * 784, id=5), "id must be a string. Received: 5"),
    (request([1, 28, 28], [0] * 784, parameters={"binary_data_output": "yes"}), 'request.parameters.binary_data_output must be true or false. Received: "yes"'),
    (request([0, 28, 28], []), "shape must be [-1, 1, 28, 28] or [-1, 28, 28] with a batch of at least 1"),
    (request([1, 28, 28.0], [0] * 784), "Received: [1, 28, 28.0]"),
    (request([True, 28, 28], [0] * 784), "Received: [true, 28, 28]"),
    (request([1] * 100_000, [0]), "Received: [1, 1, 1, 1"),
    (request([1, 28, 28], [[0] * 28] * 28), "nested but not as the shape"),
    (request([1, 28, 28], [0] * 783 + [None]), "for UINT8. Received: null"),
    (request([1, 28, 28], [0] * 783 + [0.5]), "for UINT8. Received: fractions"),
    (request([1, 28, 28], [0] * 783 + [10**30]), "Received: values from 0 to 1000000000000000000000000000000"),
    (request([1, 28, 28], [0] * 783 + [10**400], "FP32"), "within FP32's range. Received: an integer too large"),
    (request([1, 28, 28], [0] * 783 + [True], "FP32"), "must hold numbers for FP32. Received: true/false"),
    (request([1, 28, 28], "pixels"), 'must be a list of numbers (or binary data). Received: "pixels"'),
    (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}).encode(), "inputs[0].name must be 'input'"),
    (request([1, 28, 28], [0] * 784, outputs=[]), "outputs must be a non-empty list"),
    (request([1, 28, 28], [0] * 784, outputs=[{"name": "probabilities", "parameters": {"classification": 11}}]), "asks for 11 classes; model 'tiny' has 10"),
    (request([1, 28, 28], [0] * 784, outputs=[{"name": "probabilities", "parameters": {"classification": -1}}]), "classification must be an integer >= 0"),
])
def test_what_a_request_gets_wrong_is_named(body, message):
    assert message in refused(body)


def test_responses_as_json_binary_and_classification():
    proba = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    three = Signature("m", (1, 4, 4), ("a", "b:c", "d"))
    wanted = parse_infer(request([2, 4, 4], [0] * 32, id="r"), None, three)
    content, headers = encode_response(three, wanted, proba)
    assert headers == {"content-type": "application/json"}
    assert json.loads(content) == {"model_name": "m", "model_version": "1", "id": "r",
                                   "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": proba.ravel().tolist()}]}
    wanted = parse_infer(request([2, 4, 4], [0] * 32, parameters={"binary_data_output": True}), None, three)
    content, headers = encode_response(three, wanted, proba)
    length = int(headers[protocol.HEADER_LENGTH])
    assert json.loads(content[:length])["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert np.array_equal(np.frombuffer(content[length:], "<f4").reshape(2, 3), proba)
    labels = classify(proba, 2, three.classes)
    assert labels == ["0.700000:1:b:c", "0.200000:2:d", "0.500000:0:a", "0.250000:1:b:c"]  # ties: the lower index first
    top = parse_infer(request([2, 4, 4], [0] * 32, outputs=[{"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}]), None, three)
    content, headers = encode_response(three, top, proba)
    length = int(headers[protocol.HEADER_LENGTH])
    assert json.loads(content[:length])["outputs"][0]["shape"] == [2, 2]
    assert content[length:] == b"".join(struct.pack("<I", len(label)) + label.encode() for label in labels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    model = cnnkit.build(TINY_SPEC)
    model.classes = [f"class {i}" for i in range(10)]
    return model.save(folder / "tiny.cnnkit")


def test_the_page_request_holds_the_pixels_predict_reads(tiny, tmp_path):
    from PIL import Image

    served = load_models([str(tiny)])["tiny"]
    picture = np.random.default_rng(0).integers(0, 256, (40, 30, 4), dtype=np.uint8)  # RGBA, another size
    Image.fromarray(picture).save(tmp_path / "a.png")
    body, headers = page.inference_request(served, (tmp_path / "a.png").read_bytes(), "../../etc/a.png", invert=True)
    parsed = parse_infer(body, headers[protocol.HEADER_LENGTH], served.signature)
    expected, note = read_images_for(served.model, tmp_path / "a.png", invert=True)
    assert np.array_equal(parsed.images, expected[None]) and parsed.outputs == (protocol.Output(classification=5),)
    assert json.loads(headers[page.NOTES]) == [note.replace(str(tmp_path / "a.png"), "a.png")]
    write_idx(tmp_path / "images-idx3-ubyte", picture[:28, :28, 0][None].copy())  # an IDX file, told by its name
    body, headers = page.inference_request(served, (tmp_path / "images-idx3-ubyte").read_bytes(), "images-idx3-ubyte")
    assert np.array_equal(parse_infer(body, headers[protocol.HEADER_LENGTH], served.signature).images.reshape(1, 28, 28), picture[:28, :28, 0][None])
    with pytest.raises(RequestError, match=r"^wrong.npy holds images of shape \[1, 5, 5\]; model 'tiny' takes images of shape \[1, 28, 28\] or \[28, 28\]$"):
        np.save(tmp_path / "w.npy", np.zeros((1, 5, 5), np.uint8))
        page.inference_request(served, (tmp_path / "w.npy").read_bytes(), "wrong.npy")
    with pytest.raises(RequestError, match=r"^x\.png: not an image Pillow can read"):
        page.inference_request(served, b"GIF8 but not really", "x.png")


def test_models_are_named_by_spec_or_by_name_and_a_clash_stops_the_start(tiny, tmp_path):
    assert parse_target("fast=runs/a.cnnkit") == ("fast", "runs/a.cnnkit")
    assert parse_target("runs/a.cnnkit") == (None, "runs/a.cnnkit")
    assert parse_target("bad name=x.cnnkit") == (None, "bad name=x.cnnkit")  # not a name: a path
    models = load_models([str(tiny), f"again={tiny}"])
    assert list(models) == ["tiny", "again"] and models["again"].signature.classes[0] == "class 0"
    with pytest.raises(cnnkit.CnnkitError, match=f"^two bundles are named 'tiny': {tiny} and {tiny}; name one as OTHER={tiny}$"):
        load_models([str(tiny), str(tiny)])


def test_serve_fails_with_one_line_before_listening(tiny, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(tiny), str(tiny)])
    assert result.exit_code == 1 and result.stderr.strip().startswith("error: two bundles are named 'tiny'")
    result = runner.invoke(app, ["serve", str(tmp_path / "missing.cnnkit")])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: bundle not found: {tmp_path / 'missing.cnnkit'}"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", str(tiny), "--port", str(port)])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    result = runner.invoke(app, ["serve", str(tiny), "--max-body", "0"])
    assert result.exit_code == 2


def test_the_listening_socket_says_tcp_so_that_asyncio_turns_nagle_off():
    from cnnkit.serve.server import listen

    with listen("127.0.0.1", 0) as sock:  # with protocol 0, every answer waited 40 ms for a delayed ACK
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
