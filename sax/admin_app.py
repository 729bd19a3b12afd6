"""The admin's HTTP app (DESIGN section 4): the routers of `sax.admin.routes` over a
`sax.admin.cell.Cell`.

Every failure is ``{"error": {"code", "message"}}`` with the status from `sax.errors`:
`SaxError` as raised, request validation as 400 INVALID_ARGUMENT naming the field, malformed
JSON as 400, bodies over `MAX_BODY_BYTES` as 413 (checked on Content-Length and on the
streamed size), unknown routes as 404 NOT_FOUND, an unexpected exception as 500 with a request id
(its text goes to the log only).

Publish, update, unpublish and join take ``Authorization: Bearer <token>`` and check the cell's
and models' admin ACLs against the live cell config (`sax.auth`): 401 without valid credentials,
403 for a principal the ACL does not admit; nothing changes then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sax.admin.cell import Cell
from sax.admin.routes import ROUTERS
from sax.api_docs import fastapi_app, optional_bearer
from sax.auth.source import AuthSource
from sax.body_limit import BodyLimit
from sax.http_errors import install_error_handlers
from sax.schemas import MAX_BODY_BYTES, ErrorBody


def create_app(cell: Cell, auth: AuthSource | None = None) -> FastAPI:
    """`auth`: the cell's live auth settings; None = auth off (tests, embedded use)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Runs the cell's background tasks unless the caller already does (and then owns them).
        owned = not cell.running
        await cell.start()
        try:
            yield
        finally:
            if owned:
                await cell.stop()

    app = fastapi_app(
        title="sax admin",
        version="1",
        description=f"Control plane of the sax cell {cell.cell}: publish models, watch where "
        "their replicas are, and the model servers' join protocol.",
        lifespan=lifespan,
    )
    app.state.cell = cell
    app.state.auth = auth or AuthSource.off()
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # type: ignore[arg-type]
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, with our error body in place of its 422 (we answer 400)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for sub, sub_schema in schemas["ErrorBody"].pop("$defs", {}).items():
        schemas.setdefault(sub, sub_schema)
    error = {
        "description": "Error: {error: {code, message}}",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for path in spec.get("paths", {}).values():
        for op in path.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = error
    app.openapi_schema = optional_bearer(spec)
    return spec
