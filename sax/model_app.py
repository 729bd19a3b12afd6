"""The model server's HTTP API: routers over a `ModelServer`, composed here.

- `sax.server.routes.data`: Saxml's data API (``/v1/models/{name}/lm.generate`` ...,
  ``lm.generate_stream`` as server-sent events), served by `sax.server.data_serving`.
- `sax.server.routes.openai`: the OpenAI-compatible subset (``/v1/completions``,
  ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/images/generations``, ``/v1/models``),
  served by the classes in `sax.server.openai`.
- `sax.server.routes.status`: ``/v1/status``, ``/healthz``, ``/livez``, ``/readyz``,
  ``/metrics``; and ``/docs``.

Errors are ``{"error": {"code", "message"}}`` with the status from `sax.errors`, in OpenAI's shape
on the OpenAI routes (`sax.http_errors`); a model that is not loaded here is 404 so that clients
retry another replica. Request bodies over ``max_body_bytes`` are 413. A client that disconnects
cancels its engine call (non-streamed routes watch the connection; streamed responses close the
engine iterator).
"""

from __future__ import annotations

from fastapi import FastAPI
from sse_starlette.sse import AppStatus

from sax.api_docs import fastapi_app
from sax.auth.source import AuthSource
from sax.body_limit import BodyLimit
from sax.http_errors import install_error_handlers
from sax.naming import CellId
from sax.server.data_serving import DataServing
from sax.server.manager import ModelServer
from sax.server.routes.data import data_router
from sax.server.routes.openai import error_shape, openai_router
from sax.server.routes.status import status_router
from sax.store import CellStore

# The model server drains its streams itself on SIGTERM (`sax.server.main`) before it closes
# HTTP. sse-starlette's automatic drain is process-wide: once any uvicorn server in the process
# stops, it ends every stream of every other server too.
AppStatus.enable_automatic_graceful_drain = False


def create_app(server: ModelServer, auth: AuthSource | None = None) -> FastAPI:
    """`auth`: the cell's live auth settings; by default read from the server's sax_root (off
    without one)."""
    if auth is None:
        opts = server.opts
        store = CellStore(opts.sax_root, CellId.parse(opts.cell)) if opts.sax_root else None
        auth = AuthSource(store) if store is not None else AuthSource.off()
    app = fastapi_app(
        title="sax model server",
        summary="Saxml data API (lm.*, vm.*) and an OpenAI-compatible subset",
        version="1",
    )
    install_error_handlers(app, error_shape)
    app.add_middleware(BodyLimit, max_bytes=server.opts.max_body_bytes)  # type: ignore[arg-type]
    app.include_router(data_router(DataServing(server), auth))
    app.include_router(openai_router(server, auth))
    app.include_router(status_router(server))
    app.state.server = server
    return app
