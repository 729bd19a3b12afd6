"""Saxml's data API, per model short name or full id: ``POST /v1/models/{name}/<method>``.

One route per `sax.server.data_serving.DATA_METHODS` entry (``lm.generate``, ``lm.score``,
``lm.embed``, ``lm.gradient``, ``vm.classify``, ``vm.embed``, ``vm.generate``, ``vm.detect``),
and ``lm.generate_stream`` as server-sent events: ``event: chunk`` carries a `StreamChunk` per
engine step, ``event: done`` a `StreamDone` with the final samples, and ``event: error`` an
`ErrorBody` if the stream fails after its first byte (earlier failures are ordinary JSON
errors, so a client can fail over to another replica).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from sax.auth.http import BEARER
from sax.auth.source import AuthSource
from sax.schemas import ErrorBody, GenerateRequest
from sax.server.access import caller_gates
from sax.server.data_serving import DATA_METHODS, DataMethod, DataServing
from sax.server.routes.common import (
    Endpoint,
    declared,
    error_responses,
    json_response,
    sse_response,
)


def data_router(serving: DataServing, auth: AuthSource) -> APIRouter:
    router = APIRouter(
        prefix="/v1/models/{name}",
        tags=["data"],
        responses=error_responses(ErrorBody),
        dependencies=[Security(BEARER), Depends(auth.current)],
    )
    for spec in DATA_METHODS:
        router.add_api_route(
            f"/{spec.method}",
            _unary_endpoint(serving, auth, spec),
            methods=["POST"],
            name=spec.name,
            response_model=spec.response,
            operation_id=spec.operation_id,
        )

    @router.post(
        "/lm.generate_stream",
        response_class=EventSourceResponse,
        responses={200: {"description": "SSE: chunk*, then done or error"}},
    )
    async def generate_stream(name: str, body: GenerateRequest, request: Request) -> Response:
        gates = caller_gates(auth, request.headers)
        stream = await serving.generate_stream(name, body, gates, request.receive)
        return sse_response(stream)

    return router


def _unary_endpoint(serving: DataServing, auth: AuthSource, spec: DataMethod) -> Endpoint:
    """``endpoint(name, body, request)`` with `spec.request` as the body's declared type."""

    async def endpoint(name: str, body: Any, request: Request) -> Response:
        gates = caller_gates(auth, request.headers)
        return json_response(await serving.unary(spec, name, body, gates, request.receive))

    return declared(endpoint, name=str, body=spec.request, request=Request)
