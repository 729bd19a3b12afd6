"""The OpenAI-compatible routes: ``POST /v1/completions``, ``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/images/generations`` and ``GET /v1/models``, usable with the
``openai`` SDK (``base_url=http://host:port/v1``).

``model`` is a short name or a full id; errors use OpenAI's ``{"error": {"message", "type",
"param", "code"}}`` (`OPENAI_PATHS`, rendered by the app's error layer). They go through the same
ACLs, admission and stats as ``lm.generate[_stream]``, ``lm.embed`` and ``vm.generate``;
streams are always guarded by ``lm.generate``'s ACL. The serving classes in
`sax.server.openai` do the work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import Response
from pydantic import BaseModel

from sax.auth.http import BEARER
from sax.auth.source import AuthSource
from sax.errors import SaxError
from sax.server.access import GateFor, caller_gates
from sax.server.admission import Receive
from sax.server.manager import ModelServer
from sax.server.openai import protocol as oa
from sax.server.openai.serving import OpenAIServing
from sax.server.openai.serving_chat import OpenAIServingChat
from sax.server.openai.serving_completion import OpenAIServingCompletion
from sax.server.openai.serving_embedding import OpenAIServingEmbedding
from sax.server.openai.serving_images import OpenAIServingImages
from sax.server.routes.common import (
    Endpoint,
    declared,
    error_responses,
    event_stream_response,
    json_response,
)
from sax.server.streaming import EventStream

OPENAI_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/images/generations"}
)
STREAMED_PATHS = frozenset({"/completions", "/chat/completions"})

# The 200 of an OpenAI route answers JSON, or server-sent events when the body says "stream".
OPENAI_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'JSON; with "stream": true, server-sent events of chunks, then [DONE]',
        "content": {
            "text/event-stream": {
                "schema": {  # one event
                    "type": "object",
                    "properties": {"data": {"type": "string", "description": "chunk JSON"}},
                    "required": ["data"],
                }
            }
        },
    }
}


# A serving class's `create(body, gates, receive)`: a response model, or events for a stream.
Create = Callable[[Any, GateFor, Receive | None], Awaitable[BaseModel | EventStream]]


def error_shape(request: Request, err: SaxError) -> dict[str, Any]:
    """The app's error body: OpenAI's shape on `OPENAI_PATHS`, sax's elsewhere."""
    return oa.error_body(err) if request.url.path in OPENAI_PATHS else err.to_body()


def openai_router(server: ModelServer, auth: AuthSource) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        tags=["openai"],
        responses=error_responses(oa.OpenAIError),
        dependencies=[Security(BEARER), Depends(auth.current)],
    )
    # path, route name (its summary), operation id, request, response, serving method
    endpoints: list[tuple[str, str, str, type[BaseModel], type[BaseModel], Create]] = [
        (
            "/completions",
            "completions",
            "create_completion",
            oa.CompletionRequest,
            oa.CompletionResponse,
            OpenAIServingCompletion(server).create,
        ),
        (
            "/chat/completions",
            "chat_completions",
            "create_chat_completion",
            oa.ChatCompletionRequest,
            oa.ChatCompletionResponse,
            OpenAIServingChat(server).create,
        ),
        (
            "/embeddings",
            "embeddings",
            "create_embedding",
            oa.EmbeddingRequest,
            oa.EmbeddingResponse,
            OpenAIServingEmbedding(server).create,
        ),
        (
            "/images/generations",
            "images_generations",
            "create_image",
            oa.ImageGenerationRequest,
            oa.ImagesResponse,
            OpenAIServingImages(server).create,
        ),
    ]
    for path, name, operation_id, request_type, response_type, create in endpoints:
        router.add_api_route(
            path,
            _endpoint(auth, create, request_type),
            methods=["POST"],
            name=name,
            operation_id=operation_id,
            response_model=response_type,
            responses=OPENAI_STREAMED if path in STREAMED_PATHS else None,
        )
    models = OpenAIServing(server)

    @router.get("/models", response_model=oa.ModelCardList)
    async def list_models() -> Response:
        return json_response(models.model_cards())

    return router


def _endpoint(auth: AuthSource, create: Create, request_type: type[BaseModel]) -> Endpoint:
    """``endpoint(body, request)``: `create` with the caller's gates; JSON, or server-sent
    events for ``stream: true``."""

    async def endpoint(body: Any, request: Request) -> Response:
        gates = caller_gates(auth, request.headers, streams_as_generate=True)
        result = await create(body, gates, request.receive)
        if isinstance(result, EventStream):
            return event_stream_response(result)
        return json_response(result)

    return declared(endpoint, body=request_type, request=Request)
