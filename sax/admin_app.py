"""The admin's HTTP API (DESIGN section 4): routes only, over a `sax.admin.cell.Cell`.

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
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST

from sax.admin import status_page
from sax.admin.cell import Cell
from sax.api_docs import fastapi_app, optional_bearer, quietly
from sax.auth.acl import Access
from sax.auth.http import access_for
from sax.auth.source import AuthSource
from sax.body_limit import BodyLimit
from sax.http_errors import install_error_handlers
from sax.schemas import (
    MAX_BODY_BYTES,
    CellStats,
    ErrorBody,
    JoinRequest,
    JoinResponse,
    ModelInfo,
    ModelList,
    Probe,
    PublishRequest,
    ServerList,
    UpdateRequest,
    WaitRequest,
    WaitResponse,
    WatchResult,
)


def create_app(cell: Cell, auth: AuthSource | None = None) -> FastAPI:
    """`auth`: the cell's live auth settings; None = auth off (tests, embedded use)."""
    auth = auth or AuthSource.off()
    caller_access = Depends(access_for(auth))

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
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # type: ignore[arg-type]

    @app.post("/v1/models", status_code=201, tags=["models"])
    async def publish(request: PublishRequest, access: Access = caller_access) -> ModelInfo:
        """Publish a model; it is durable when this returns. Replicas are placed right after.
        Needs the cell's admin ACL."""
        return await cell.publish(request, access)

    @app.get("/v1/models", tags=["models"])
    async def list_models() -> ModelList:
        return await cell.list()

    @app.get("/v1/models/{name}", tags=["models"])
    async def get_model(name: str) -> ModelInfo:
        """One model with its replicas, their statuses, and why it is short of replicas."""
        return await cell.get(name)

    @app.patch("/v1/models/{name}", tags=["models"])
    async def update_model(
        name: str, request: UpdateRequest, access: Access = caller_access
    ) -> ModelInfo:
        """Change replicas, checkpoint, overrides or ACLs; model_path is immutable. Needs the
        cell's or the model's admin ACL."""
        return await cell.update(name, request, access)

    @app.delete("/v1/models/{name}", tags=["models"])
    async def unpublish(name: str, access: Access = caller_access) -> dict[str, str]:
        """Needs the cell's or the model's admin ACL."""
        await cell.unpublish(name, access)
        return {}

    @app.get("/v1/models/{name}/locations", tags=["models"])
    async def watch_locations(
        name: str,
        admin_id: str = "",
        seqno: Annotated[int, Query(ge=0)] = 0,
        timeout_s: Annotated[float | None, Query(gt=0)] = None,
    ) -> WatchResult:
        """WatchLoc: ready replica addresses after `seqno`; waits (bounded) for a change."""
        return await cell.watch(name, admin_id, seqno, timeout_s)

    @app.post("/v1/models/{name}:wait", tags=["models"])
    async def wait_for_ready(
        name: str,
        request: Annotated[WaitRequest, Body()] = WaitRequest(num_replicas=1, timeout_s=30.0),
    ) -> WaitResponse:
        """Returns once `num_replicas` replicas are ready; 504 if not within `timeout_s`."""
        return await cell.wait(name, request.num_replicas, request.timeout_s)

    @app.get("/v1/stats", tags=["cell"])
    async def stats(model: str = "") -> CellStats:
        return await cell.stats(model or None)

    @app.get("/v1/servers", tags=["cell"], operation_id="list_servers")
    async def servers() -> ServerList:
        return await cell.servers()

    @app.post("/v1/servers:join", tags=["servers"])
    async def join(
        request: JoinRequest, http: Request, access: Access = caller_access
    ) -> JoinResponse:
        """Model server long-poll join: answered at once when the server needs news, else
        held until its assignment changes or the poll timeout passes. Needs the cell's admin
        ACL; reports of models not assigned to the server are ignored."""
        return await cell.join(request, lambda: _until_disconnected(http), access)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status() -> str:
        await auth.current()
        return status_page.render(
            str(cell.cell),
            cell.admin_id,
            await cell.list(),
            await cell.servers(),
            status_page.AuthView.of(auth.config, auth.enabled),
        )

    @app.get("/healthz", tags=["cell"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "cell": str(cell.cell), "admin_id": cell.admin_id}

    @app.get("/livez", tags=["cell"], response_model=Probe, responses={503: {"model": Probe}})
    async def livez() -> Response:
        """Liveness in the Kubernetes convention: 503 means restart this process."""
        return _probe(cell.liveness())

    @app.get("/readyz", tags=["cell"], response_model=Probe, responses={503: {"model": Probe}})
    async def readyz() -> Response:
        """Readiness: this admin holds the cell's lease and its control loops run."""
        return _probe(cell.readiness())

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(cell.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _probe(probe: Probe) -> Response:
    return Response(
        probe.model_dump_json(),
        status_code=200 if probe.status == "ok" else 503,
        media_type="application/json",
    )


async def _until_disconnected(request: Request) -> None:
    """Returns when the client closes its connection (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec, with our error body in place of its 422 (we answer 400)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = quietly(
        lambda: get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
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
