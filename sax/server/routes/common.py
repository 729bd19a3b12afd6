"""What the model server's routers share: JSON responses, streamed events, and endpoints
built from a table."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from sax.server.streaming import SEP, EventStream

ERROR_STATUSES = (400, 401, 403, 404, 429, 500, 501, 503, 504)


def error_responses(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: the error statuses a data route may answer, each with `body`."""
    return {status: {"model": body} for status in ERROR_STATUSES}


def json_response(body: BaseModel, status: int = 200) -> Response:
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


def sse_response(stream: EventStream) -> EventSourceResponse:
    """`stream` as server-sent events with keep-alive pings; closed however the response ends."""
    return EventSourceResponse(stream.events, sep=SEP, background=BackgroundTask(stream.close))


def event_stream_response(stream: EventStream) -> StreamingResponse:
    """`stream` as a plain ``text/event-stream`` body (OpenAI's: no pings), closed however the
    response ends."""

    async def encoded() -> AsyncIterator[bytes]:
        async for event in stream.events:
            yield event.encode()

    return StreamingResponse(
        encoded(), media_type="text/event-stream", background=BackgroundTask(stream.close)
    )


Endpoint = Callable[..., Awaitable[Response]]


def declared(endpoint: Endpoint, **params: Any) -> Endpoint:
    """`endpoint` with its parameters declared to FastAPI as `params` (name -> type, in
    order), so that one function serves routes whose bodies differ only in type."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, kind, annotation=declared_type)
            for name, declared_type in params.items()
        ],
        return_annotation=Response,
    )
    return endpoint
