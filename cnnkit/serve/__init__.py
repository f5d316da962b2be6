"""`cnnkit serve`: bundles behind the Open Inference Protocol (KServe V2 REST), a page, metrics.

protocol.py checks requests and encodes responses (no web framework), models.py loads the bundles,
app.py is the Starlette app (routes, limits, inference threads), page.py reads an uploaded file for
the page (static/index.html), metrics.py counts for Prometheus, server.py runs it all under uvicorn.
Starlette, uvicorn and prometheus-client are the ``serve`` extra: ``pip install 'cnnkit[serve]'``.
"""

from __future__ import annotations

from ..errors import CnnkitError

_NEEDS = ("starlette", "uvicorn", "prometheus_client")


def require() -> None:
    """A CnnkitError naming the extra when a module the server needs is not installed."""
    import importlib.util

    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise CnnkitError(f"cnnkit serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: pip install 'cnnkit[serve]'")


def serve(targets: list[str], host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve bundles until SIGTERM or Ctrl-C (see :func:`cnnkit.serve.server.serve`)."""
    require()
    from .server import serve as _serve

    _serve(targets, host, port, **options)


def create_app(targets: list[str], **options):
    """The ASGI app serving the bundles ``targets`` (``PATH`` or ``NAME=PATH``), for an ASGI server of your own."""
    require()
    from .app import create_app as _create_app
    from .models import load_models

    return _create_app(load_models(targets), **options)
