"""`cnnkit serve` as a client sees it: a real server process, driven by NVIDIA's tritonclient (a
client of the Open Inference Protocol nobody here wrote), by httpx, and by raw sockets for what
clients should not do. Every answer is compared with ``Model.predict_proba`` in this process.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import signal
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

import cnnkit  # noqa: E402
from serving import ServerProcess, trained_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, synthetic_dir):
    folder = tmp_path_factory.mktemp("serve")
    return trained_bundle(folder, synthetic_dir), trained_bundle(folder, synthetic_dir, name="other", seed=1)


@pytest.fixture(scope="module")
def model(bundles):
    return cnnkit.load(bundles[0])


@pytest.fixture(scope="module")
def server(bundles):
    """Both bundles, the second under a name of our choosing."""
    process = ServerProcess(bundles[0], f"second={bundles[1]}")
    yield process
    assert process.stop() == 0
    assert process.lines[-1].endswith("cnnkit serve: stopped")


@pytest.fixture(scope="module")
def impatient(bundles):
    """One bundle, 1 s for a request's head and again for its body, no access log."""
    process = ServerProcess(bundles[0], "--timeout", "1", "--quiet")
    yield process
    assert process.stop() == 0
    assert len(process.lines) == 2, process.lines  # started, stopped: --quiet logs no request


@pytest.fixture
def triton(server):
    client = httpclient.InferenceServerClient(url=server.address)
    yield client
    client.close()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)


def infer_json(x: np.ndarray, datatype: str = "UINT8", **extra) -> dict:
    return {"inputs": [{"name": "input", "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}], **extra}


def assert_serves_correctly(server, model):
    """One more inference, answered right: what every hostile request must leave possible."""
    x = images(2, seed=99)
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_json(x), timeout=10)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.reshape(answer.json()["outputs"][0]["data"], (2, 10)), model.predict_proba(x), atol=1e-6)


def test_health_and_metadata_through_tritonclient(triton, model):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("tiny") and triton.is_model_ready("second", model_version="1")
    assert not triton.is_model_ready("missing")
    server = triton.get_server_metadata()
    assert server["name"] == "cnnkit" and {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = triton.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert triton.get_model_metadata("second", model_version="1")["name"] == "second"
    with pytest.raises(InferenceServerException) as missing:
        triton.get_model_metadata("tiny", model_version="2")
    assert missing.value.status() == "404" and "has no version '2'" in missing.value.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype, shape", [("UINT8", (5, 1, 28, 28)), ("FP32", (3, 28, 28))])
def test_inference_through_tritonclient_equals_predict_proba(triton, model, binary, datatype, shape):
    x = images(shape[0], seed=len(shape)).reshape(shape).astype(np.uint8 if datatype == "UINT8" else np.float32)
    tensor = httpclient.InferInput("input", list(shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = triton.infer("tiny", [tensor], outputs=outputs, request_id=f"req-{datatype}-{binary}")
    assert result.get_response()["id"] == f"req-{datatype}-{binary}"
    assert result.get_response()["model_name"] == "tiny"
    np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(x), atol=1e-6)


def test_outputs_left_out_come_as_binary_and_versions_route(triton, model):
    x = images(4)
    tensor = httpclient.InferInput("input", [4, 1, 28, 28], "UINT8")
    tensor.set_data_from_numpy(x)
    result = triton.infer("tiny", [tensor], model_version="1")  # tritonclient asks for binary_data_output
    assert result.get_output("probabilities")["parameters"] == {"binary_data_size": 4 * 10 * 4}
    np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classification_extension_gives_the_top_class_names(triton, model, binary):
    x = images(3, seed=5)
    tensor = httpclient.InferInput("input", [3, 1, 28, 28], "UINT8")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = triton.infer("tiny", [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)])
    labels = result.as_numpy("probabilities")
    assert labels.shape == (3, 3)
    proba = model.predict_proba(x)
    for row, expected in zip(labels, proba):
        parsed = [(label.decode() if isinstance(label, bytes) else label).split(":", 2) for label in row]  # bytes when binary
        assert [int(index) for _, index, _ in parsed] == list(np.argsort(-expected, kind="stable")[:3])
        assert [name for _, _, name in parsed] == [model.classes[int(index)] for _, index, _ in parsed]
        assert [float(p) for p, _, _ in parsed] == pytest.approx(np.sort(expected)[::-1][:3], abs=1e-6)


def test_unknown_model_is_404_with_the_served_names(triton, server):
    with pytest.raises(InferenceServerException) as missing:
        triton.get_model_metadata("nope")
    assert missing.value.status() == "404"
    answer = httpx.post(f"{server.url}/v2/models/nope/infer", json=infer_json(images(1)))
    assert answer.status_code == 404 and answer.json() == {"error": "unknown model 'nope'; this server has 'tiny', 'second'"}


_input = infer_json(images(1))["inputs"][0]


def _request(*inputs, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _binary(tensor: dict, data: bytes) -> tuple[bytes, str]:
    header = _request(tensor)
    return header + data, str(len(header))


_fp32 = {"name": "input", "datatype": "FP32", "shape": [1, 28, 28]}
HOSTILE = {  # body, Inference-Header-Content-Length, what the error says
    "malformed JSON": (b'{"inputs": [', None, "malformed JSON in the request"),
    "not an object": (b"[1, 2]", None, "the request must be a JSON object"),
    "1e9 images": (_request(dict(_input, shape=[10**9, 1, 28, 28])), None, "shape [1000000000, 1, 28, 28] needs 784,000,000,000 values. Received: 784 values"),
    "1e9 binary": (*_binary(dict(_fp32, shape=[10**9, 28, 28], parameters={"binary_data_size": 10**9 * 3136}), bytes(3136)),
                   "binary_data_size is 3,136,000,000,000 bytes but the JSON header is followed by 3,136 bytes"),
    "data short": (_request(dict(_input, data=_input["data"][:-1])), None, "needs 784 values. Received: 783 values"),
    "wrong shape": (_request(dict(_input, shape=[1, 3, 28, 28])), None, "shape must be [N, 1, 28, 28] or [N, 28, 28] with N >= 1"),
    "metadata's -1": (_request(dict(_input, shape=[-1, 28, 28])), None, "shape must be [N, 1, 28, 28] or [N, 28, 28] with N >= 1"),
    "wrong datatype": (_request(dict(_input, datatype="INT64")), None, 'datatype must be UINT8 or FP32 (raw pixels). Received: "INT64"'),
    "strings": (_request(dict(_input, data=["1"] * 784)), None, "must hold integers 0..255 for UINT8. Received: strings"),
    "out of range": (_request(dict(_input, data=[256] * 784)), None, "must hold integers 0..255 for UINT8. Received: values from 256 to 256"),
    "NaN": (_request(dict(_fp32, data=[float("nan")] * 784)), None, "NaN is not a JSON number"),
    "1e400": (_request(dict(_fp32, data=[0.0] * 784)).replace(b"[0.0, ", b"[1e400, ", 1), None, "must be finite numbers"),
    "1e39 in FP32": (_request(dict(_fp32, data=[1e39] * 784)), None, "must be finite numbers within FP32's range (±3.4e38). Received: 1e+39"),
    "binary infinity": (*_binary(dict(_fp32, parameters={"binary_data_size": 3136}), np.full(784, np.inf, "<f4").tobytes()), "must be finite numbers"),
    "empty inputs": (b'{"inputs": []}', None, "inputs must be a non-empty list of tensors. Received: []"),
    "two inputs": (_request(_input, _input), None, "has one input, 'input'. Received: 2 inputs"),
    "unknown output": (_request(_input, outputs=[{"name": "logits"}]), None, "outputs[0].name must be 'probabilities'"),
    "header longer than body": (b'{"inputs": []}', "999", "Inference-Header-Content-Length must be a byte count within the 14-byte body"),
    "binary too short": (*_binary(dict(_fp32, parameters={"binary_data_size": 3136}), bytes(100)), "binary_data_size is 3,136 bytes but the JSON header is followed by 100 bytes"),
    "binary without its header": (_binary(dict(_fp32, parameters={"binary_data_size": 3136}), bytes(3136))[0], None,
                                  "of JSON followed by 3,136 more bytes; binary tensor data after the JSON needs the Inference-Header-Content-Length header"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_bad_request_gets_400_with_one_line_and_the_server_goes_on(server, model, case):
    body, header_length, fragment = HOSTILE[case]
    headers = {"content-type": "application/json"} | ({"inference-header-content-length": header_length} if header_length else {})
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"] and "\n" not in answer.text
    assert_serves_correctly(server, model)


def raw(server, request: bytes, wait: float = 10) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it."""
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(request)
        return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_120_mb_body_is_refused_with_413_declared_or_streamed(server, model):
    body = b"[" * 120_000_000
    declared = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, timeout=30)
    assert declared.status_code == 413
    assert declared.json() == {"error": "the request body of 120,000,000 bytes is over the server's limit of 67,108,864 bytes (--max-body)"}
    chunks = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))  # chunked: no length to refuse up front
    streamed = httpx.post(f"{server.url}/v2/models/tiny/infer", content=chunks, timeout=30)
    assert streamed.status_code == 413
    assert streamed.json() == {"error": "the request body is over the server's limit of 67,108,864 bytes (--max-body)"}
    assert_serves_correctly(server, model)


def test_slow_clients_time_out_without_holding_up_the_others(impatient, model):
    server = impatient
    host, port = server.address.rsplit(":", 1)
    idle, trickle, body = (socket.create_connection((host, int(port)), timeout=10) for _ in range(3))
    body.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n{")
    trickle.sendall(b"GET /v2 HTTP/1.1\r\n")
    assert_serves_correctly(server, model)  # while three connections dawdle
    for _ in range(15):  # a header byte every 0.2 s, for longer than the 1 s a request head may take
        try:
            trickle.sendall(b"X")
        except OSError:
            break  # closed by the server
        time.sleep(0.2)
    answer = read_to_close(body)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"the request body did not arrive within 1 s (1 byte came)" in answer
    assert read_to_close(idle) == b""
    try:  # closed by the server (a connection left open would time out here, after 10 s)
        assert read_to_close(trickle) == b""
    except ConnectionResetError:
        pass  # closed while bytes were still arriving
    for sock in (idle, trickle, body):
        sock.close()
    assert_serves_correctly(server, model)


def test_eight_concurrent_clients_get_only_right_answers(server, model):
    batches = {seed: images(1 + seed % 3 * 20, seed) for seed in range(8)}  # batch 1, 21 and 41: split and not
    expected = {seed: model.predict_proba(x) for seed, x in batches.items()}
    wrong: list[str] = []

    def client(seed: int):
        with httpx.Client(base_url=server.url, timeout=30) as session:
            for round_ in range(6):
                x, binary = batches[seed], round_ % 2 == 1
                if binary:
                    header = json.dumps({"id": f"{seed}-{round_}", "inputs": [{"name": "input", "datatype": "UINT8", "shape": list(x.shape),
                                                                                "parameters": {"binary_data_size": x.nbytes}}]}).encode()
                    answer = session.post("/v2/models/tiny/infer", content=header + x.tobytes(), headers={"inference-header-content-length": str(len(header))})
                else:
                    answer = session.post("/v2/models/tiny/infer", json=infer_json(x, id=f"{seed}-{round_}"))
                got = answer.json()
                proba = np.reshape(got["outputs"][0]["data"], (len(x), 10)) if answer.status_code == 200 else None
                if got.get("id") != f"{seed}-{round_}" or proba is None or not np.allclose(proba, expected[seed], atol=1e-6):
                    wrong.append(f"client {seed} round {round_}: {answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_metrics_and_access_log_count_the_requests(server):
    assert httpx.post(f"{server.url}/v2/models/second/infer", json=infer_json(images(3))).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/second/versions/7").status_code == 404
    text = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'cnnkit_requests_total\{endpoint="infer",model="second",status="200"\} [1-9]', text)
    assert re.search(r'cnnkit_requests_total\{endpoint="model_metadata",model="second",status="404"\} 1.0', text)
    assert re.search(r'cnnkit_inference_images_total\{model="second"\} [3-9]', text)
    assert re.search(r'cnnkit_request_duration_seconds_bucket\{endpoint="infer",le="\+Inf",model="second"\} [1-9]', text)
    logged = re.compile(r'"POST /v2/models/second/infer" 200 \d+B [\d.]+ms$')
    for _ in range(100):  # the log is read from the server's stderr by another thread
        if any(logged.search(line) for line in server.lines):
            break
        time.sleep(0.05)
    assert any(logged.search(line) for line in server.lines), server.lines[-5:]


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_a_picture_posted_to_infer_is_sent_where_it_belongs(server, model):
    x = images(1, seed=3)
    png = png_bytes(x[0, 0])
    hint = "; POST the file itself to /page/request/tiny, which answers with the inference request for it, or use `cnnkit predict`"
    for how, what in [(dict(content=png), "not a PNG image"),  # once "malformed JSON in the request: not UTF-8 text"
                      (dict(content=png, headers={"content-type": "image/png"}), "not an image file (Content-Type: image/png)"),
                      (dict(files={"file": ("boot.png", png, "image/png")}), "not a multipart upload (Content-Type: multipart/form-data)")]:
        answer = httpx.post(f"{server.url}/v2/models/tiny/infer", timeout=10, **how)
        assert answer.status_code == 415 and answer.json()["error"].endswith(what + hint), answer.text
    made = httpx.post(f"{server.url}/page/request/tiny?filename=boot.png", content=png, timeout=10)  # where the file belongs
    length = made.headers["inference-header-content-length"]
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", content=made.content, headers={"inference-header-content-length": length}, timeout=10)
    top = answer.json()["outputs"][0]["data"][0]  # "<probability>:<index>:<class name>", the most likely first
    assert int(top.split(":")[1]) == model.predict_proba(x).argmax()
    assert httpx.post(f"{server.url}/page/request/tiny?filename=boot.png", files={"file": ("boot.png", png)}).json() == {
        "error": "send the file itself as the request body (curl --data-binary @FILE), not as a multipart form"}
    for value in ("true", "yes", "2"):  # each once meant "do not invert"
        answer = httpx.post(f"{server.url}/page/request/tiny?filename=boot.png&invert={value}", content=png, timeout=10)
        assert answer.status_code == 400 and answer.json() == {"error": f"query parameter invert must be 0 or 1. Received: '{value}'"}


def test_routes_a_client_guesses_at(server, triton):
    root = httpx.get(f"{server.url}/v2/")  # once a 307 to /v2, which curl does not follow
    assert root.status_code == 200 and root.json() == httpx.get(f"{server.url}/v2").json()
    listing = httpx.get(f"{server.url}/v2/models")
    assert listing.status_code == 404 and "this server has models 'tiny', 'second'" in listing.json()["error"]
    assert triton.get_model_repository_index() == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""},
                                                   {"name": "second", "version": "1", "state": "READY", "reason": ""}]
    wrong = httpx.get(f"{server.url}/v2/models/tiny/infer")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json() == {"error": "GET is not allowed on '/v2/models/tiny/infer'; use POST"}
    assert '<link rel="icon" href="data:image/svg+xml,' in httpx.get(f"{server.url}/").text  # no /favicon.ico 404 on every load


def test_the_connection_limit_counts_from_one_and_answers_in_json(bundles):
    """--max-connections 1 once refused every request (uvicorn counted the asking connection against
    the limit), in plain text that the access log and the metrics never saw; here under h11."""
    process = ServerProcess(bundles[0], "--max-connections", "1", without=("httptools",))
    host, port = process.address.rsplit(":", 1)
    first, second = http.client.HTTPConnection(host, int(port), timeout=10), http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        first.request("GET", "/v2/health/live")
        answer = first.getresponse()
        assert (answer.status, answer.read()) == (200, b'{"live":true}')  # the first connection is within the limit
        second.request("GET", "/v2/health/live")  # while the first stays open
        refused = second.getresponse()
        assert refused.status == 503 and refused.getheader("content-type") == "application/json"
        assert json.loads(refused.read()) == {"error": "the server has 2 open connections, more than its limit of 1 (--max-connections); try again later"}
        first.request("GET", "/metrics")
        metrics = first.getresponse().read().decode()
        assert 'cnnkit_requests_total{endpoint="over_limit",model="",status="503"} 1.0' in metrics
    finally:
        first.close()
        second.close()
        assert process.stop() == 0
    assert "httptools is not installed, so uvicorn parses HTTP with h11 (slower): pip install httptools" in process.lines[1]
    assert any('"GET /v2/health/live" 503 ' in line for line in process.lines), process.lines


def test_ctrl_c_stops_the_server_cleanly(bundles):
    process = ServerProcess(bundles[0], "--quiet")
    assert httpx.get(f"{process.url}/v2/health/live").json() == {"live": True}
    process.process.send_signal(signal.SIGINT)
    assert process.stop() == 0
    assert process.lines[-1].endswith("cnnkit serve: stopped")
