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


def refused(body: bytes, header_length=None, signature=GRAY, status=400) -> str:
    with pytest.raises(RequestError) as caught:
        parse_infer(body, header_length, signature)
    assert caught.value.status == status
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
    assert "binary_data_size is 6,272 bytes but the JSON header is followed by 6,268 bytes" in refused(body[:-4], length)
    assert "but the JSON header is followed by 1 byte" in refused(body[: int(length) + 1], length)  # once "1 bytes follow"
    assert "needs 6,272 bytes. Received: 784 bytes" in refused(*binary([2, 1, 28, 28], x.astype(np.uint8)[:1], "FP32"))
    assert "followed by 2 bytes but no input has parameters.binary_data_size" in refused(request([1, 28, 28], [0] * 784) + b"xx", str(len(request([1, 28, 28], [0] * 784))))


@pytest.mark.parametrize("body, message", [
    (b'{"id": "\x80"}', "malformed JSON in the request: not UTF-8 text (byte 8 is 0x80)"),
    (b"[" * 100_000, "malformed JSON in the request: nested too deeply"),
    (b"null", "the request must be a JSON object. Received: null"),
    (request([1, 28, 28], [0] * 784, id=5), "id must be a string. Received: 5"),
    (request([1, 28, 28], [0] * 784, parameters={"binary_data_output": "yes"}), 'request.parameters.binary_data_output must be true or false. Received: "yes"'),
    (request([0, 28, 28], []), "shape must be [N, 1, 28, 28] or [N, 28, 28] with N >= 1 for model 'tiny'. Received: [0, 28, 28]"),
    (request([1, 28, 28.0], [0] * 784), "Received: [1, 28, 28.0]"),
    (request([True, 28, 28], [0] * 784), "Received: [true, 28, 28]"),
    (request([1] * 100_000, [0]), "Received: [1, 1, 1, 1"),
    (request([1, 28, 28], [[0] * 28] * 28), "nested but not as the shape"),
    (request([1, 28, 28], [0] * 783 + [None]), "for UINT8. Received: null"),
    (request([1, 28, 28], [0] * 783 + [0.5]), "for UINT8. Received: fractions"),
    (request([1, 28, 28], [0] * 783 + [10**30]), "Received: values from 0 to 1000000000000000000000000000000"),
    (request([1, 28, 28], [0] * 783 + [10**400], "FP32"), "within FP32's range (±3.4e38). Received: an integer too large"),
    (request([1, 28, 28], [0] * 783 + [1e39], "FP32"), "data must be finite numbers within FP32's range (±3.4e38). Received: 1e+39 at flat index 783"),
    (request([1, 28, 28], [0]), "shape [1, 28, 28] needs 784 values. Received: 1 value"),
    (request([1, 28, 28], [0] * 783 + [True], "FP32"), "must hold numbers for FP32. Received: true/false"),
    (request([1, 28, 28], "pixels"), 'must be a list of numbers (or binary data). Received: "pixels"'),
    (json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}).encode(), "inputs[0].name must be 'input'"),
    (request([1, 28, 28], [0] * 784, outputs=[]), "outputs must be a non-empty list"),
    (request([1, 28, 28], [0] * 784, outputs=[{"name": "probabilities", "parameters": {"classification": 11}}]), "asks for 11 classes; model 'tiny' has 10"),
    (request([1, 28, 28], [0] * 784, outputs=[{"name": "probabilities", "parameters": {"classification": -1}}]), "classification must be an integer >= 0"),
])
def test_what_a_request_gets_wrong_is_named(body, message):
    assert message in refused(body)


def test_the_shape_error_asks_for_a_batch_size_not_for_minus_one():
    message = refused(request([-1, 28, 28], [0] * 784))  # what the metadata says, and what a client then sends
    assert "shape must be [N, 1, 28, 28] or [N, 28, 28] with N >= 1" in message and "-1," not in message.partition("Received")[0]
    assert GRAY.metadata()["inputs"][0]["shape"] == [-1, 1, 28, 28]  # the protocol's way to say "any batch"


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00\x00\x00\x00"


@pytest.mark.parametrize("body, content_type, what", [
    (PNG, None, "not a PNG image"),
    (PNG, "application/json", "not a PNG image"),  # the bytes say what the label does not
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg", "not an image file (Content-Type: image/jpeg)"),
    (b'--x\r\nContent-Disposition: form-data; name="file"; filename="boot.png"\r\n\r\n' + PNG, "multipart/form-data; boundary=x",
     "not a multipart upload (Content-Type: multipart/form-data)"),
])
def test_a_picture_posted_to_the_infer_route_is_told_where_to_go(body, content_type, what):
    with pytest.raises(RequestError) as caught:  # the route checks the Content-Type before it reads the body, then the body
        protocol.check_content_type(content_type, "tiny")
        parse_infer(body, None, GRAY)
    assert caught.value.status == 415
    assert str(caught.value) == (f"this route takes an inference request (JSON tensors, see GET /v2/models/tiny), {what}; POST the file itself to "
                       "/page/request/tiny, which answers with the inference request for it, or use `cnnkit predict`")


@pytest.mark.parametrize("data", [np.zeros(784, np.uint8), np.full(784, 200, np.uint8)], ids=["ascii", "not-utf8"])
def test_binary_data_without_its_header_length_is_named(data):
    body, length = binary([1, 28, 28], data)  # the JSON header says binary_data_size, the HTTP header is missing
    assert refused(body) == (f"the request is {length} bytes of JSON followed by 784 more bytes; binary tensor data after the JSON "
                             "needs the Inference-Header-Content-Length header (the JSON's length in bytes)")
    assert np.array_equal(parse_infer(body, length, GRAY).images.ravel(), data)  # with it, the same bytes are a request


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
    (tmp_path / "a=b.cnnkit").write_bytes(b"")
    assert parse_target(str(tmp_path / "a=b.cnnkit")) == (None, str(tmp_path / "a=b.cnnkit"))  # a file: a path, '=' or not
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
    result = runner.invoke(app, ["serve", f"my model={tiny}"])  # once "bundle not found: my model=..."
    assert result.exit_code == 1 and result.stderr.strip() == (f"error: 'my model={tiny}' is no file, and 'my model' cannot be a model name "
                                                               "for NAME=PATH (1-100 letters, digits, '.', '_' or '-', starting with a letter or digit)")
    (tmp_path / "boot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(30))
    result = runner.invoke(app, ["serve", str(tmp_path / "boot.png")])  # once "map keys must be strings, found msgpack type 0x50"
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {tmp_path / 'boot.png'} is not a cnnkit bundle (it looks like a PNG image)"
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


@pytest.mark.parametrize("host, url, warning", [
    ("127.0.0.1", "http://127.0.0.1:8000/", None),
    ("::1", "http://[::1]:8000/", None),
    ("0.0.0.0", "http://127.0.0.1:8000/", f"listening on every interface (0.0.0.0; others may reach it as http://{socket.gethostname()}:8000/)"),
    ("::", "http://[::1]:8000/", f"listening on every interface (::; others may reach it as http://{socket.gethostname()}:8000/)"),
    ("192.168.1.5", "http://192.168.1.5:8000/", "listening on 192.168.1.5 with"),
])
def test_the_start_line_gives_a_url_that_works_and_warns_when_others_can_reach_it(host, url, warning):
    from cnnkit.serve.server import start_lines

    lines = start_lines(host, 8000, ["tiny", "other"], 1, "httptools")
    assert lines[0] == f"cnnkit serve: {url} (tiny, other; 1 inference thread)"  # once "http://0.0.0.0:8000/", "1 inference threads"
    if warning is None:
        assert len(lines) == 1
    else:
        assert len(lines) == 2 and warning in lines[1]
        assert lines[1].startswith("cnnkit serve: warning: ") and "with no TLS and no authentication: anyone who can reach this port" in lines[1]
    assert start_lines(host, 8000, ["tiny"], 2, "h11")[-1] == \
        "cnnkit serve: httptools is not installed, so uvicorn parses HTTP with h11 (slower): pip install httptools"


def test_a_bundle_with_test_time_augmentation_is_served_as_predict_proba_answers(tmp_path):
    """The server answers with the bundle's own predict.tta applied, as `cnnkit predict` does."""
    import asyncio

    import httpx

    from cnnkit.serve.app import create_app

    spec = {**TINY_SPEC, "name": "flipped", "predict": {"tta": ["hflip"]}}
    model = cnnkit.build(spec)
    bundle = model.save(tmp_path / "flipped.cnnkit")
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)

    async def ask():
        transport = httpx.ASGITransport(app=create_app(load_models([str(bundle)])))
        async with httpx.AsyncClient(transport=transport, base_url="http://cnnkit") as client:
            return await client.post("/v2/models/flipped/infer", content=request([3, 1, 28, 28], x.ravel().tolist()))

    answer = asyncio.run(ask())
    assert answer.status_code == 200
    got = np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(3, -1)
    np.testing.assert_allclose(got, model.predict_proba(x), rtol=0, atol=1e-6)
    assert not np.allclose(got, model.predict_proba(x, tta=False), rtol=0, atol=1e-6)  # the views changed the answer
