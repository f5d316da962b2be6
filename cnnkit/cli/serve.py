"""`cnnkit serve`: bundles over HTTP (the Open Inference Protocol); the work is in cnnkit.serve."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .app import AllowMismatchOption, command


@command()
def serve(
    bundles: Annotated[list[str], typer.Argument(metavar="BUNDLE", help="Bundles to serve: PATH (served under its spec's name) or NAME=PATH.", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one, shown at start).")] = 8000,
    max_body: Annotated[int, typer.Option(min=1, help="Largest request body in bytes (larger: 413).")] = 64 * 1024 * 1024,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a client has to send a request's head, and again its body (else 408 / closed).")] = 30.0,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Inference threads (default: the cores cnnkit uses).")] = None,
    max_connections: Annotated[int, typer.Option(min=1, help="Most connections open at once; a request while more are open gets 503.")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access-log line per request.")] = False,
    allow_provider_mismatch: AllowMismatchOption = False,
):
    """Serve bundles over HTTP: the Open Inference Protocol (KServe V2 REST), a page at /, /metrics (needs the serve extra: pip install "cnnkit\\[serve]")."""
    from ..serve import serve as run_server

    run_server(bundles, host, port, max_body=max_body, timeout=timeout, workers=workers, max_connections=max_connections,
               quiet=quiet, allow_provider_mismatch=allow_provider_mismatch)
