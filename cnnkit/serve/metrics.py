"""What the server counts, in Prometheus' text format (prometheus-client), and its access log line.

Each app has its own registry, so two servers in one process (tests) count apart. Label values come
from fixed sets only (the served model names, the route's endpoint, the status codes the server
sends), never from what a client wrote, so a client cannot grow the number of series.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Inference at batch 1 takes about a millisecond on a small net: the buckets start below that.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Request counts by model, endpoint and status; latency by model and endpoint; images inferred."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("model", "endpoint")
        self.requests = Counter("cnnkit_requests", "HTTP requests answered, by model ('' for none), endpoint and status code.",
                                (*labels, "status"), registry=self.registry)
        self.latency = Histogram("cnnkit_request_duration_seconds", "Time from a request's head to the end of its response.",
                                 labels, buckets=BUCKETS, registry=self.registry)
        self.images = Counter("cnnkit_inference_images", "Images classified, by model.", ("model",), registry=self.registry)
        self.in_progress = Gauge("cnnkit_requests_in_progress", "Requests being answered now.", registry=self.registry)

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        self.latency.labels(model, endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def access_line(client, method: str, path: str, status: int, size: int, seconds: float) -> str:
    """``127.0.0.1:5123 "POST /v2/models/tiny/infer" 200 412B 1.21ms``; control characters in the path escaped."""
    where = f"{client[0]}:{client[1]}" if client else "-"
    shown = path if path.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)
    return f'{where} "{method} {shown[:200]}" {status} {size}B {seconds * 1000:.2f}ms'
