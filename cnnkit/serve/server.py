"""Running the app: a listening socket, uvicorn with the limits set, a clean stop on SIGTERM/Ctrl-C.

uvicorn (the reference ASGI server; httptools, in the serve extra, parses HTTP, else h11) closes a
keep-alive connection that stays idle after a response, and the app bounds the time a request body
may take.
What uvicorn does not bound is the time before a request's head is complete: a client that connects
and sends nothing, or one header byte a minute, would hold its connection for ever. So the
connection is given ``timeout`` seconds from its start (and again after each response) to deliver a
whole request head, then closed — the same check uvicorn makes itself when it shuts down.
The connection limit is the app's (a JSON 503, logged and counted), not uvicorn's ``limit_concurrency``,
which counts the request's own connection against it (a limit of 1 refused every request) and answers
in plain text past the access log and the metrics.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from ..errors import CnnkitError
from .app import MAX_BODY, TIMEOUT, create_app
from .models import load_models
from .protocol import counted

MAX_CONNECTIONS = 256


def head_deadline(base: type, seconds: float) -> type:
    """uvicorn's HTTP protocol class ``base``, closing a connection whose request head is overdue."""

    class HeadDeadline(base):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._overdue)

        def _overdue(self):
            # No request since the deadline was armed: uvicorn's own test for an idle connection.
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.shutdown()

    return HeadDeadline


def _stopped(signum, frame):
    raise KeyboardInterrupt


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one), or a CnnkitError saying why not.

    Its protocol is IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    without it a response's body waits for the client's delayed ACK of its head (40 ms a request).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise CnnkitError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise CnnkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def start_lines(host: str, port: int, names: list[str], workers: int, http_parser: str) -> list[str]:
    """What `cnnkit serve` says once it accepts connections on ``host:port`` (the bound address): a URL
    that works here (127.0.0.1 when it listens on every interface), the models and threads; then a
    warning when other machines can reach it, and a notice when HTTP is parsed by h11 (slower)."""
    address = ipaddress.ip_address(host.partition("%")[0])
    shown = ("127.0.0.1" if address.version == 4 else "::1") if address.is_unspecified else host
    lines = [f"cnnkit serve: {_url(shown, port)} ({', '.join(names)}; {counted(workers, 'inference thread')})"]
    if not address.is_loopback:
        where = f"every interface ({host}; others may reach it as {_url(socket.gethostname(), port)})" if address.is_unspecified else host
        lines.append(f"cnnkit serve: warning: listening on {where} with no TLS and no authentication: "
                     f"anyone who can reach this port can use the models (put a proxy with TLS and authentication in front)")
    if http_parser != "httptools":
        lines.append(f"cnnkit serve: httptools is not installed, so uvicorn parses HTTP with {http_parser} (slower): pip install httptools")
    return lines


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def stderr_line(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
    sys.stderr.flush()


def serve(targets: list[str], host: str = "127.0.0.1", port: int = 8000, *, max_body: int = MAX_BODY, timeout: float = TIMEOUT,
          workers: int | None = None, max_connections: int = MAX_CONNECTIONS, quiet: bool = False,
          allow_provider_mismatch: bool = False, announce: Callable[[str], None] = stderr_line) -> None:
    """Serve the bundles ``targets`` (``PATH`` or ``NAME=PATH``) until SIGTERM or Ctrl-C.

    Loads and warms up every model, then listens, says where on one line (``announce``), and
    answers requests; a signal stops accepting connections, lets the requests in flight finish (at
    most ``timeout`` seconds) and returns.
    """
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if max_body < 1 or timeout <= 0 or (workers is not None and workers < 1) or max_connections < 1:
        raise CnnkitError(f"max_body, timeout, workers and max_connections must be positive. Received: {max_body}, {timeout}, {workers}, {max_connections}")
    models = load_models(targets, allow_provider_mismatch=allow_provider_mismatch)
    app = create_app(models, max_body=max_body, timeout=timeout, workers=workers, log=None if quiet else stderr_line,
                     max_connections=max_connections, open_connections=lambda: len(server.server_state.connections))
    sock = listen(host, port)
    config = uvicorn.Config(app, http=head_deadline(AutoHTTPProtocol, timeout), lifespan="off", log_config=None, access_log=False,
                            timeout_keep_alive=5, timeout_graceful_shutdown=max(1, round(timeout)), server_header=False)
    bound_host, bound_port = sock.getsockname()[:2]
    http_parser = "h11" if issubclass(AutoHTTPProtocol, H11Protocol) else "httptools"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)  # signal handlers set, accepting connections: say so
            for line in start_lines(bound_host, bound_port, list(models), app.server.workers, http_parser):
                announce(line)

    server = Server(config)
    # uvicorn handles SIGTERM and SIGINT itself, then raises the signal again once it has shut down;
    # this handler turns that SIGTERM into the same quiet return as Ctrl-C's KeyboardInterrupt.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stopped) if main else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
        app.server.pool.shutdown(wait=True)
    announce("cnnkit serve: stopped")
