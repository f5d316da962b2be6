"""The Starlette app: the Open Inference Protocol's routes, the page at ``/``, ``/metrics``.

Handlers are thin: read the body within its limits, hand the work to the inference threads, answer.
Everything a request asks of a model (checking it, ``predict_proba``, encoding the answer) runs in
one of ``workers`` threads (default: the cores cnnkit uses), so the event loop only moves bytes and
a health check is answered while a big batch computes. While any of them runs, OpenBLAS is kept to
one thread (``cnnkit.runtime.parallel``): the parallelism is the request threads plus cnnkit's own
split of a big batch over its worker threads, not BLAS threads fighting them for the cores.

Around the routes, :class:`Observed` counts and logs every request, serves a path with a trailing
slash as the path without it (``/v2/``: no redirect a client may not follow), and answers a request
that arrives while more than ``max_connections`` connections are open with a JSON 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import DataError
from ..runtime import parallel
from . import page, protocol
from .metrics import Metrics, access_line
from .models import ServedModel
from .protocol import RequestError, counted

MAX_BODY = 64 * 1024 * 1024
TIMEOUT = 30.0


def error(message: str, status: int = 400, close: bool = False, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": "..."}`` on one line; ``close`` ends the connection (a body was left unread)."""
    return JSONResponse({"error": " ".join(message.split())}, status, headers={**(headers or {}), **({"connection": "close"} if close else {})})


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, at most ``limit`` bytes, arriving within ``timeout`` seconds (else 413 or 408).

    A declared length over the limit is refused before any of the body is read. A body that goes over
    it while streaming is read on and dropped (another ``limit`` bytes at most, within the timeout)
    before the 413: a connection closed with unread bytes is reset, and a client still sending would
    lose the answer with it.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit:
        raise RequestError(f"the request body of {int(declared):,} bytes is over the server's limit of {limit:,} bytes (--max-body)", 413)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed", 415)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > 2 * limit:
                    break
                if size <= limit:
                    chunks.append(chunk)
    except TimeoutError:
        if size <= limit:
            raise RequestError(f"the request body did not arrive within {timeout:g} s ({counted(size, 'byte')} came)", 408) from None
    except ClientDisconnect:
        raise RequestError(f"the client closed the connection after {counted(size, 'byte')} of the body", 400) from None
    if size > limit:
        raise RequestError(f"the request body is over the server's limit of {limit:,} bytes (--max-body)", 413)
    return b"".join(chunks)


class Server:
    """The state behind the routes: the models, the limits, the inference threads, the metrics."""

    def __init__(self, models: dict[str, ServedModel], *, max_body: int = MAX_BODY, timeout: float = TIMEOUT,
                 workers: int | None = None, log: Callable[[str], None] | None = None,
                 max_connections: int | None = None, open_connections: Callable[[], int] | None = None):
        """``open_connections`` counts the HTTP server's open connections (`cnnkit serve` passes
        uvicorn's); with ``max_connections``, a request arriving while there are more gets a 503."""
        from .. import __version__

        self.models, self.max_body, self.timeout, self.log = models, max_body, timeout, log
        self.max_connections, self.open_connections = max_connections, open_connections
        self.workers = workers or parallel.num_threads()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cnnkit-serve")
        self.metrics = Metrics()
        self.info = {"name": "cnnkit", "version": __version__, "extensions": protocol.EXTENSIONS}
        self.page = resources.files(__package__).joinpath("static/index.html").read_bytes()

    def model(self, request: Request) -> ServedModel:
        name = request.path_params["name"]
        served = self.models.get(name)
        if served is None:
            raise RequestError(f"unknown model {name[:100]!r}; this server has {', '.join(map(repr, self.models))}", 404)
        version = request.path_params.get("version", protocol.VERSION)
        if version != protocol.VERSION:
            raise RequestError(f"model {name!r} has no version {version[:40]!r}; it has version {protocol.VERSION}", 404)
        return served

    def over_limit(self) -> int:
        """The open connections, when there are more than ``max_connections`` (this request's own
        connection among them), else 0."""
        if self.max_connections is None or self.open_connections is None:
            return 0
        count = self.open_connections()
        return count if count > self.max_connections else 0

    async def busy(self, scope, receive, send, count: int) -> None:
        """The ASGI answer to a request beyond the connection limit: a JSON 503, and the connection closed."""
        message = (f"the server has {counted(count, 'open connection')}, more than its limit of {self.max_connections} "
                   f"(--max-connections); try again later")
        await error(message, 503, close=True, headers={"retry-after": "1"})(scope, receive, send)

    async def compute(self, fn, *args):
        """``fn(*args)`` in an inference thread, with OpenBLAS kept to one thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, _single_blas, fn, args)

    # -- routes -------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return Response(self.page, media_type="text/html; charset=utf-8")

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(self.info)

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(self.model(request).signature.metadata())

    async def model_ready(self, request: Request) -> Response:
        return JSONResponse({"name": self.model(request).name, "ready": True})

    async def infer(self, request: Request) -> Response:
        served = self.model(request)
        protocol.check_content_type(request.headers.get("content-type"), served.name)  # before the body: it is not read
        body = await read_body(request, self.max_body, self.timeout)
        content, headers, count = await self.compute(_infer, served, body, request.headers.get(protocol.HEADER_LENGTH))
        self.metrics.images.labels(served.name).inc(count)
        return Response(content, headers=headers)

    async def page_models(self, request: Request) -> Response:
        return JSONResponse({"models": list(self.models)})

    async def page_request(self, request: Request) -> Response:
        served = self.model(request)
        invert = page.query_flag(request.query_params, "invert")
        page.check_upload_type(request.headers.get("content-type"))
        body = await read_body(request, self.max_body, self.timeout)
        content, headers = await self.compute(page.inference_request, served, body, request.query_params.get("filename", ""), invert)
        return Response(content, headers=headers)

    async def repository_index(self, request: Request) -> Response:
        body = await read_body(request, self.max_body, self.timeout)
        return JSONResponse(protocol.repository_index(body, self.models))

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.text(), media_type=self.metrics.content_type)


def _single_blas(fn, args):
    with parallel.single_threaded_blas():
        return fn(*args)


def _infer(served: ServedModel, body: bytes, header_length: str | None) -> tuple[bytes, dict[str, str], int]:
    """The response to an inference request: body, headers, and how many images it classified."""
    request = protocol.parse_infer(body, header_length, served.signature)
    try:
        proba = served.model.predict_proba(request.images)
    except DataError as exc:  # what the checks above let through and the model refuses
        raise RequestError(str(exc)) from None
    return (*protocol.encode_response(served.signature, request, proba), len(proba))


def create_app(models: dict[str, ServedModel], **options) -> Starlette:
    """The ASGI app serving ``models`` (see :class:`Server` for the options)."""
    server = Server(models, **options)
    model = "/v2/models/{name}"
    routes = [Route("/", server.index), Route("/v2", server.server_metadata),
              Route("/v2/health/live", server.live), Route("/v2/health/ready", server.ready)]
    for prefix in (model, model + "/versions/{version}"):
        routes += [Route(prefix, server.model_metadata), Route(prefix + "/ready", server.model_ready),
                   Route(prefix + "/infer", server.infer, methods=["POST"])]
    routes += [Route("/v2/repository/index", server.repository_index, methods=["POST"])]
    routes += [Route("/page/models", server.page_models), Route("/page/request/{name}", server.page_request, methods=["POST"]),
               Route("/metrics", server.prometheus)]
    app = Starlette(routes=routes, exception_handlers={RequestError: _request_error, HTTPException: _http_error, Exception: _internal_error})
    app.state.server = server
    return Observed(app, server)


async def _request_error(request: Request, exc: RequestError) -> Response:
    return error(str(exc), exc.status, close=exc.status in (408, 413, 415))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    names = ", ".join(map(repr, request.app.state.server.models))
    what = {404: f"no route {request.url.path[:200]!r}; this server has models {names}: GET /v2/models/NAME for one's metadata, "
                 f"POST /v2/models/NAME/infer to infer (the list: POST /v2/repository/index)",
            405: f"{request.method} is not allowed on {request.url.path[:200]!r}; use {(exc.headers or {}).get('Allow', 'another method')}"}
    return error(what.get(exc.status_code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # A bug: one line to the client; Starlette raises it again, so uvicorn logs the traceback.
    return error(f"internal error: {type(exc).__name__}: {exc}", 500)


class Observed:
    """ASGI middleware: the metrics and the access-log line of every request, whatever its outcome."""

    def __init__(self, app: Starlette, server: Server):
        self.app, self.server, self.state = app, server, app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, size = time.perf_counter(), 500, 0
        path = scope["path"]
        if path.endswith("/") and path != "/":  # /v2/ is /v2: served, not redirected (a client may not follow)
            scope = {**scope, "path": path.rstrip("/") or "/"}

        async def observed_send(message):
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        metrics = self.server.metrics
        metrics.in_progress.inc()
        busy = self.server.over_limit()
        try:
            if busy:
                await self.server.busy(scope, receive, observed_send, busy)
            else:
                await self.app(scope, receive, observed_send)
        finally:
            metrics.in_progress.dec()
            seconds = time.perf_counter() - start
            endpoint = "over_limit" if busy else getattr(scope.get("endpoint"), "__name__", "none")
            name = scope.get("path_params", {}).get("name")
            metrics.observe(name if name in self.server.models else "", endpoint, status, seconds)
            if self.server.log is not None:
                self.server.log(access_line(scope.get("client"), scope["method"], path, status, size, seconds))
