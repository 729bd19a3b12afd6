"""The admin's HTTP routes (DESIGN section 4): HTTP <-> calls on the app's `Cell`, nothing else.

`sax.admin_app.create_app` puts the `Cell` and the cell's live `AuthSource` on ``app.state``
and includes these routers. Routes that change the cell or join it take the caller's `Access`
(``Authorization: Bearer <token>``); the cell checks it against the cell's and models' admin ACLs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST

from sax.admin import status_page
from sax.admin.cell import Cell
from sax.auth.acl import Access
from sax.auth.http import Credentials
from sax.auth.source import AuthSource
from sax.schemas import (
    CellStats,
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


# The dependencies are coroutines: a plain function would run on the thread pool, and two
# joins of one server could then overtake each other on their way to the cell.
async def _cell(request: Request) -> Cell:
    cell: Cell = request.app.state.cell
    return cell


async def _auth(request: Request) -> AuthSource:
    auth: AuthSource = request.app.state.auth
    return auth


async def _access(request: Request, credentials: Credentials) -> Access:
    token = credentials.credentials if credentials else None
    return Access(await (await _auth(request)).current(), token)


CellDep = Annotated[Cell, Depends(_cell)]
AuthDep = Annotated[AuthSource, Depends(_auth)]
AccessDep = Annotated[Access, Depends(_access)]

model_routes = APIRouter(tags=["models"])
cell_routes = APIRouter(tags=["cell"])
server_routes = APIRouter(tags=["servers"])
page_routes = APIRouter(include_in_schema=False)


@model_routes.post("/v1/models", status_code=201)
async def publish(request: PublishRequest, cell: CellDep, access: AccessDep) -> ModelInfo:
    """Publish a model; it is durable when this returns. Replicas are placed right after.
    Needs the cell's admin ACL."""
    return await cell.publish(request, access)


@model_routes.get("/v1/models")
async def list_models(cell: CellDep) -> ModelList:
    return await cell.list()


@model_routes.get("/v1/models/{name}")
async def get_model(name: str, cell: CellDep) -> ModelInfo:
    """One model with its replicas, their statuses, and why it is short of replicas."""
    return await cell.get(name)


@model_routes.patch("/v1/models/{name}")
async def update_model(
    name: str, request: UpdateRequest, cell: CellDep, access: AccessDep
) -> ModelInfo:
    """Change replicas, checkpoint, overrides or ACLs; model_path is immutable. Needs the
    cell's or the model's admin ACL."""
    return await cell.update(name, request, access)


@model_routes.delete("/v1/models/{name}")
async def unpublish(name: str, cell: CellDep, access: AccessDep) -> dict[str, str]:
    """Needs the cell's or the model's admin ACL."""
    await cell.unpublish(name, access)
    return {}


@model_routes.get("/v1/models/{name}/locations")
async def watch_locations(
    name: str,
    cell: CellDep,
    admin_id: str = "",
    seqno: Annotated[int, Query(ge=0)] = 0,
    timeout_s: Annotated[float | None, Query(gt=0)] = None,
) -> WatchResult:
    """WatchLoc: ready replica addresses after `seqno`; waits (bounded) for a change."""
    return await cell.watch(name, admin_id, seqno, timeout_s)


@model_routes.post("/v1/models/{name}:wait")
async def wait_for_ready(
    name: str,
    cell: CellDep,
    request: Annotated[WaitRequest, Body()] = WaitRequest(num_replicas=1, timeout_s=30.0),
) -> WaitResponse:
    """Returns once `num_replicas` replicas are ready; 504 if not within `timeout_s`."""
    return await cell.wait(name, request.num_replicas, request.timeout_s)


@cell_routes.get("/v1/stats")
async def stats(cell: CellDep, model: str = "") -> CellStats:
    return await cell.stats(model or None)


@cell_routes.get("/v1/servers", operation_id="list_servers")
async def servers(cell: CellDep) -> ServerList:
    return await cell.servers()


@cell_routes.get("/healthz")
async def healthz(cell: CellDep) -> dict[str, str]:
    return {"status": "ok", "cell": str(cell.cell), "admin_id": cell.admin_id}


@cell_routes.get("/livez", response_model=Probe, responses={503: {"model": Probe}})
async def livez(cell: CellDep) -> Response:
    """Liveness in the Kubernetes convention: 503 means restart this process."""
    return _probe(cell.liveness())


@cell_routes.get("/readyz", response_model=Probe, responses={503: {"model": Probe}})
async def readyz(cell: CellDep) -> Response:
    """Readiness: this admin holds the cell's lease and its control loops run."""
    return _probe(cell.readiness())


@server_routes.post("/v1/servers:join")
async def join(
    request: JoinRequest, http: Request, cell: CellDep, access: AccessDep
) -> JoinResponse:
    """Model server long-poll join: answered at once when the server needs news, else
    held until its assignment changes or the poll timeout passes. Needs the cell's admin
    ACL; reports of models not assigned to the server are ignored."""
    return await cell.join(request, lambda: _until_disconnected(http), access)


@page_routes.get("/", response_class=HTMLResponse)
async def status(cell: CellDep, auth: AuthDep) -> str:
    await auth.current()
    return status_page.render(
        str(cell.cell),
        cell.admin_id,
        await cell.list(),
        await cell.servers(),
        status_page.AuthView.of(auth.config, auth.enabled),
    )


@page_routes.get("/metrics")
async def metrics(cell: CellDep) -> Response:
    return Response(cell.metrics.render(), media_type=CONTENT_TYPE_LATEST)


ROUTERS = (model_routes, cell_routes, server_routes, page_routes)


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
