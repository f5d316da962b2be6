"""Benchmark `cnnkit serve`: requests/s and latency through HTTP against in-process ``predict_proba``.

    python tools/bench_serve.py                          # the seed net, concurrency 1 and 8, batch 1 and 64
    python tools/bench_serve.py --bundle m.cnnkit --seconds 5 --json
    python tools/bench_serve.py --server-args="--workers 1"

For each (concurrency, batch), C client threads each send binary inference requests (UINT8, the
binary tensor extension, keep-alive connections) for a fixed time; then C threads call
``predict_proba`` on the same batch in this process for the same time. The difference of the p50
latencies is what the server adds: HTTP, checking, encoding, the thread hand-off, and the Python
client's own work, which runs on the same cores. Wall-clock figures are only as quiet as the
machine: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED_SPEC = ROOT / "specs" / "fashion_mnist_seed.json"


def start_server(bundle: Path, extra: list[str]) -> tuple[subprocess.Popen, str, int]:
    command = [sys.executable, "-m", "cnnkit", "serve", str(bundle), "--port", "0", "--quiet", *extra]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if "http://" not in line:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    host, port = line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
    return process, host, int(port)


def request_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": "input", "datatype": "UINT8", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}


def run_threads(concurrency: int, seconds: float, make_call) -> list[float]:
    """Each of ``concurrency`` threads repeats its call (``make_call()`` gives one per thread) for ``seconds``; all latencies."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start_line = threading.Barrier(concurrency)

    def work(i: int):
        call = make_call()
        call()  # warm: a connection, first-use costs
        start_line.wait()
        end = time.perf_counter() + seconds
        while (now := time.perf_counter()) < end:
            call()
            latencies[i].append(time.perf_counter() - now)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [t for per_thread in latencies for t in per_thread]


def http_call(host: str, port: int, name: str, x: np.ndarray, expected: np.ndarray):
    def make():
        connection = http.client.HTTPConnection(host, port)
        connection.connect()
        # http.client sends the head and the body in two writes: without TCP_NODELAY, Nagle's
        # algorithm holds the body until the server's delayed ACK, 40 ms later (urllib3 sets it too).
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body, headers = request_body(x)

        def call():
            connection.request("POST", f"/v2/models/{name}/infer", body, headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise SystemExit(f"server answered {response.status}: {data[:200]!r}")
            offset = int(response.getheader("Inference-Header-Content-Length"))
            if not np.allclose(np.frombuffer(data, "<f4", offset=offset).reshape(expected.shape), expected, atol=1e-6):
                raise SystemExit("the server's answer differs from predict_proba")

        return call

    return make


def ready_call(host: str, port: int):
    """GET /v2/health/ready: the HTTP round trip alone (uvicorn, routing, this client), no model."""
    def make():
        connection = http.client.HTTPConnection(host, port)

        def call():
            connection.request("GET", "/v2/health/ready")
            connection.getresponse().read()

        return call

    return make


def summary(latencies: list[float], seconds: float, batch: int) -> dict:
    ordered = sorted(latencies)
    return {"requests_per_s": round(len(ordered) / seconds, 1), "images_per_s": round(len(ordered) * batch / seconds, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 3), "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "requests": len(ordered)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: the seed spec's net, untrained: speed does not depend on the weights)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--server-args", default="", help="more `cnnkit serve` options, e.g. \"--workers 1\"")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import cnnkit
    from cnnkit.runtime import parallel, tuning

    with tempfile.TemporaryDirectory() as folder:
        bundle = args.bundle
        if bundle is None:
            bundle = cnnkit.build(SEED_SPEC).save(Path(folder) / "seed.cnnkit")
        model = cnnkit.load(bundle)
        name = model.spec.name
        process, host, port = start_server(bundle, shlex.split(args.server_args))
        try:
            floor = summary(run_threads(1, args.seconds, ready_call(host, port)), args.seconds, 0)
            rows = []
            for concurrency in args.concurrency:
                for batch in args.batch:
                    x = np.random.default_rng(batch).integers(0, 256, (batch, *model.input_shape), dtype=np.uint8)
                    expected = model.predict_proba(x)
                    served = summary(run_threads(concurrency, args.seconds, http_call(host, port, name, x, expected)), args.seconds, batch)
                    local = summary(run_threads(concurrency, args.seconds, lambda: lambda: model.predict_proba(x)), args.seconds, batch)
                    rows.append({"concurrency": concurrency, "batch": batch, "server": served, "in_process": local,
                                 "p50_overhead_ms": round(served["p50_ms"] - local["p50_ms"], 3)})
        finally:
            process.terminate()
            process.wait(30)
    report = {"cpu_model": tuning.cpu_model(), "cores": os.cpu_count(), "cnnkit_threads": parallel.num_threads(),
              "load_average": [round(v, 2) for v in os.getloadavg()], "bundle": str(args.bundle or "seed spec (untrained)"),
              "server_args": args.server_args, "seconds": args.seconds, "http_round_trip_p50_ms": floor["p50_ms"], "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['cpu_model']}, {report['cores']} cores, cnnkit threads {report['cnnkit_threads']}, load average {report['load_average']}")
    print(f"HTTP round trip alone (GET /v2/health/ready, 1 client): p50 {floor['p50_ms']} ms")
    print(f"{'conc':>4} {'batch':>5} | {'server req/s':>12} {'p50 ms':>8} {'p99 ms':>8} | {'in-process req/s':>16} {'p50 ms':>8} {'p99 ms':>8} | {'p50 overhead ms':>15}")
    for row in rows:
        s, p = row["server"], row["in_process"]
        print(f"{row['concurrency']:>4} {row['batch']:>5} | {s['requests_per_s']:>12} {s['p50_ms']:>8} {s['p99_ms']:>8} | "
              f"{p['requests_per_s']:>16} {p['p50_ms']:>8} {p['p99_ms']:>8} | {row['p50_overhead_ms']:>15}")


if __name__ == "__main__":
    main()
