"""``GET /v1/status``, ``/healthz``, ``/livez``, ``/readyz`` (Kubernetes probes) and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sax.schemas import Probe, ServerStatus
from sax.server.manager import ModelServer
from sax.server.metrics import server_registry
from sax.server.routes.common import json_response

READY_JOIN_AGE_S = 15.0  # a join reply comes at least every poll timeout (5 s)


def status_router(server: ModelServer) -> APIRouter:
    router = APIRouter(tags=["status"])
    registry = server_registry(server)

    @router.get("/v1/status", response_model=ServerStatus, operation_id="server_status")
    async def status() -> Response:
        return json_response(
            ServerStatus(
                address=server.address,
                admin_address=server.admin_address,
                admin_id=server.admin_id,
                # The uuid is what a join proves an assignment with: never shown here.
                models=[m.model_copy(update={"uuid": ""}) for m in server.reports()],
                engine_pids=server.engine_pids(),
                backend_errors=server.backend_errors,
                draining=server.draining,
            )
        )

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/livez", response_model=Probe, responses={503: {"model": Probe}})
    async def livez() -> Response:
        """Liveness in the Kubernetes convention: 503 means restart this process."""
        return _probe(server.liveness())

    @router.get("/readyz", response_model=Probe, responses={503: {"model": Probe}})
    async def readyz() -> Response:
        """Readiness: joined to the admin, not draining, every model it holds LOADED."""
        return _probe(server.readiness(time.monotonic(), server.joined_at, READY_JOIN_AGE_S))

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _probe(probe: Probe) -> Response:
    return json_response(probe, 200 if probe.status == "ok" else 503)
