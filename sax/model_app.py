"""The model server's HTTP API: thin routes over a `ModelServer`.

Data API (Saxml method names, which are also the ACL keys), per model short name:
``POST /v1/models/{name}/lm.generate``, ``lm.generate_stream`` (SSE), ``lm.score``, ``lm.embed``,
``lm.gradient``, ``vm.classify``, ``vm.embed``, ``vm.generate``, ``vm.detect``. Errors are
``{"error": {"code", "message"}}`` with the status from `sax.errors`; a model that is not loaded
here is 404 so that clients retry another replica.

Streaming (``lm.generate_stream``): everything that can fail early (lookup, ACL, admission, extra
inputs, the engine producing its first chunk) fails as an ordinary JSON error response. Then
``event: chunk`` carries a `StreamChunk` per engine step, ``event: done`` a `StreamDone` with the
final samples, and ``event: error`` an `ErrorBody` if the stream fails after its first byte.

``vm.classify``, ``vm.embed``, ``vm.generate`` and ``vm.detect`` take images as base64 text and
are served by a `VisionServable` that lists the method; other models answer 501. A bad image is
a 400 naming its field.

OpenAI-compatible: ``POST /v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings`` and
``GET /v1/models``, usable with the ``openai`` SDK (``base_url=http://host:port/v1``); ``model``
is a short name or a full id, errors use OpenAI's ``{"error": {"message", "type", "code"}}``. They
go through the same ACLs, admission and stats as ``lm.generate[_stream]`` and ``lm.embed``.

A client that disconnects cancels its engine call (non-streamed routes watch the connection;
streamed responses close the engine iterator). Also ``GET /v1/status``, ``/healthz``,
``/metrics``, ``/docs``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from sax.allow import error_headers
from sax.api_docs import fastapi_app
from sax.auth.acl import EVERYONE, Access
from sax.auth.http import BEARER, WWW_AUTHENTICATE, bearer_token
from sax.auth.source import AuthSource
from sax.body_limit import BodyLimit
from sax.errors import Code, SaxError, internal
from sax.naming import CellId
from sax.request_errors import public_params, validation_error
from sax.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    DetectRequest,
    DetectResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    GradientRequest,
    GradientResponse,
    ImageEmbedRequest,
    Probe,
    ReplicaStatus,
    ScoreRequest,
    ScoreResponse,
    ServerStatus,
    StreamChunk,
    StreamDone,
    TextToImageRequest,
    TextToImageResponse,
)
from sax.server import openai_compat as oa
from sax.server import openai_images as oi
from sax.server.admission import Gate
from sax.server.manager import Model, ModelServer
from sax.server.metrics import server_registry
from sax.server.openai_serving import OpenAIServing
from sax.server.sampling import extra_input_names, no_extra_inputs
from sax.server.servable import Servable
from sax.server.streaming import GenerateStream
from sax.server.vision import as_vision
from sax.store import CellStore

log = logging.getLogger(__name__)

# The model server drains its streams itself on SIGTERM (`sax.server.main`) before it closes
# HTTP. sse-starlette's automatic drain is process-wide: once any uvicorn server in the process
# stops, it ends every stream of every other server too.
AppStatus.enable_automatic_graceful_drain = False

JSON = "application/json"
LOADED = ReplicaStatus.LOADED
OPENAI_PATHS = frozenset(
    {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/images/generations"}
)
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 429, 500, 501, 503, 504)
}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": oa.OpenAIError} for s in (400, 401, 403, 404, 429, 500, 501, 503, 504)
}

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


def _json(body: bytes | str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _gate_for(auth: AuthSource) -> Callable[[Model, str, Request], Gate]:
    """`gate(model, method, request)`: `method`'s gate once the model's ACL for it admits the
    caller. ``lm.generate_stream`` without an ACL of its own is guarded by ``lm.generate``'s
    (Saxml left it open), and OpenAI streams always are, like the unstreamed calls. The
    routers' `AuthSource.current` dependency has refreshed the config snapshot already."""

    def gate(model: Model, method: str, request: Request) -> Gate:
        acl_method = method
        if method == "lm.generate_stream" and (
            request.url.path in OPENAI_PATHS or not model.spec.acls.get(method)
        ):
            acl_method = "lm.generate"
        acl = model.spec.acls.get(acl_method, "")
        if acl not in EVERYONE:
            access = Access(auth.snapshot(), bearer_token(request.headers))
            access.require_data(model.model_id, acl_method, acl)
        return model.gate(method)

    return gate


def _error_response(request: Request, err: SaxError, status: int | None = None) -> Response:
    body = oa.error_body(err) if request.url.path in OPENAI_PATHS else err.to_body()
    response = _json(json.dumps(body), status or err.http_status)
    if err.code == Code.UNAUTHENTICATED:
        response.headers.update(WWW_AUTHENTICATE)
    return response


def _install_error_handlers(app: FastAPI) -> None:
    async def on_sax_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SaxError)
        return _error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error_response(request, validation_error(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        err = SaxError(code, f"{request.method} {request.url.path}: {exc.detail}")
        response = _error_response(request, err, exc.status_code)
        response.headers.update(error_headers(exc, app.router.routes, request.scope))
        return response

    async def on_other(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this response; the log ties its traceback to the id.
        return _error_response(request, internal(exc, f"{request.method} {request.url.path}", log))

    app.add_exception_handler(SaxError, on_sax_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_other)


def _sse(event: bytes, payload: str) -> bytes:
    return b"event: " + event + b"\ndata: " + payload.encode() + b"\n\n"


async def _sax_events(stream: GenerateStream, names: dict[str, str]) -> AsyncIterator[bytes]:
    try:
        with public_params(names):
            async for chunk in stream.chunks():
                yield _sse(b"chunk", StreamChunk(items=chunk).model_dump_json())
            yield _sse(b"done", StreamDone(samples=stream.samples()).model_dump_json())
    except SaxError as exc:
        yield _sse(b"error", json.dumps(exc.to_body()))
    except Exception as exc:
        err = internal(exc, f"stream of {stream.gate.model_id}", log)
        yield _sse(b"error", json.dumps(err.to_body()))


def _data_router(server: ModelServer, auth: AuthSource) -> APIRouter:
    router = APIRouter(
        prefix="/v1/models/{name}",
        tags=["data"],
        responses=ERRORS,
        dependencies=[Security(BEARER), Depends(auth.current)],
    )
    _gate = _gate_for(auth)
    default_timeout = server.opts.default_timeout_s

    async def call(
        name: str,
        method: str,
        request: Request,
        timeout_s: float | None,
        make: Callable[[Servable], Callable[[], Awaitable[Any]]],
        cost: int = 1,
    ) -> Any:
        """Looks the model up, checks its ACL, and runs ``make(servable)`` under admission
        (one request of `cost` items), the request's deadline and disconnect cancellation."""
        model = server.loaded(name)
        gate = _gate(model, method, request)
        timeout = timeout_s or default_timeout
        return await gate.run(make(model.engine), timeout, request.receive, cost)

    @router.post("/lm.generate", response_model=GenerateResponse)
    async def generate(name: str, body: GenerateRequest, request: Request) -> Response:
        def make(s: Servable) -> Callable[[], Awaitable[Any]]:
            return partial(s.generate, s.lm_prompt(body.text), s.sampling(body.extra_inputs))

        with public_params(extra_input_names(body.extra_inputs, prompt="text")):
            samples = await call(name, "lm.generate", request, body.timeout_s, make)
        return _json(GenerateResponse(samples=samples).model_dump_json())

    @router.post(
        "/lm.generate_stream",
        response_class=EventSourceResponse,
        responses={200: {"description": "SSE: chunk*, then done or error"}},
    )
    async def generate_stream(name: str, body: GenerateRequest, request: Request) -> Response:
        model = server.loaded(name)
        gate = _gate(model, "lm.generate_stream", request)
        servable = model.engine
        names = extra_input_names(body.extra_inputs, prompt="text")
        with public_params(names):
            options = servable.sampling(body.extra_inputs)
            prompt = servable.lm_prompt(body.text)
            timeout = body.timeout_s or default_timeout
            stream = GenerateStream(gate, servable, prompt, options, timeout)
            await stream.start(request.receive)
        return EventSourceResponse(
            _sax_events(stream, names), sep="\n", background=BackgroundTask(stream.close)
        )

    @router.post("/lm.score", response_model=ScoreResponse)
    async def score(name: str, body: ScoreRequest, request: Request) -> Response:
        no_extra_inputs(body.extra_inputs, "lm.score")
        with public_params({"prompt": "suffixes"}):
            scores = await call(
                name,
                "lm.score",
                request,
                body.timeout_s,
                lambda s: partial(s.score, body.prefix, body.suffixes, body.extra_inputs),
                cost=len(body.suffixes),
            )
        return _json(ScoreResponse(scores=scores).model_dump_json())

    @router.post("/lm.embed", response_model=EmbedResponse)
    async def embed(name: str, body: EmbedRequest, request: Request) -> Response:
        no_extra_inputs(body.extra_inputs, "lm.embed")
        with public_params({"prompt": "text"}):
            vector = await call(
                name,
                "lm.embed",
                request,
                body.timeout_s,
                lambda s: partial(s.embed, body.text, body.extra_inputs),
            )
        return _json(EmbedResponse(embedding=vector).model_dump_json())

    @router.post("/lm.gradient", response_model=GradientResponse)
    async def gradient(name: str, body: GradientRequest, request: Request) -> Response:
        no_extra_inputs(body.extra_inputs, "lm.gradient")
        result = await call(
            name,
            "lm.gradient",
            request,
            body.timeout_s,
            lambda s: partial(s.gradient, body.prefix, body.suffix, body.extra_inputs),
        )
        return _json(result.model_dump_json())

    @router.post("/vm.classify", response_model=ClassifyResponse, operation_id="vm_classify")
    async def vm_classify(name: str, body: ClassifyRequest, request: Request) -> Response:
        texts = await call(
            name,
            "vm.classify",
            request,
            body.timeout_s,
            lambda s: partial(
                as_vision(s, "vm.classify").classify, body.image_bytes, body.extra_inputs
            ),
        )
        return _json(ClassifyResponse(texts=texts).model_dump_json())

    @router.post("/vm.embed", response_model=EmbedResponse, operation_id="vm_embed")
    async def vm_embed(name: str, body: ImageEmbedRequest, request: Request) -> Response:
        vector = await call(
            name,
            "vm.embed",
            request,
            body.timeout_s,
            lambda s: partial(
                as_vision(s, "vm.embed").embed_image, body.image_bytes, body.extra_inputs
            ),
        )
        return _json(EmbedResponse(embedding=vector).model_dump_json())

    @router.post("/vm.generate", response_model=TextToImageResponse, operation_id="vm_generate")
    async def vm_generate(name: str, body: TextToImageRequest, request: Request) -> Response:
        images = await call(
            name,
            "vm.generate",
            request,
            body.timeout_s,
            lambda s: partial(
                as_vision(s, "vm.generate").text_to_image, body.text, body.extra_inputs
            ),
        )
        return _json(TextToImageResponse(images=images).model_dump_json())

    @router.post("/vm.detect", response_model=DetectResponse, operation_id="vm_detect")
    async def vm_detect(name: str, body: DetectRequest, request: Request) -> Response:
        boxes = await call(
            name,
            "vm.detect",
            request,
            body.timeout_s,
            lambda s: partial(
                as_vision(s, "vm.detect").detect, body.image_bytes, body.text, body.extra_inputs
            ),
        )
        return _json(DetectResponse(bounding_boxes=boxes).model_dump_json())

    return router


def _openai_router(server: ModelServer, auth: AuthSource) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        tags=["openai"],
        responses=OPENAI_ERRORS,
        dependencies=[Security(BEARER), Depends(auth.current)],
    )
    serving = OpenAIServing(server, _gate_for(auth))

    @router.post(
        "/completions",
        response_model=oa.CompletionResponse,
        operation_id="create_completion",
        responses=OPENAI_STREAMED,
    )
    async def completions(body: oa.CompletionRequest, request: Request) -> Response:
        return await serving.completions(body, request)

    @router.post(
        "/chat/completions",
        response_model=oa.ChatCompletionResponse,
        operation_id="create_chat_completion",
        responses=OPENAI_STREAMED,
    )
    async def chat_completions(body: oa.ChatCompletionRequest, request: Request) -> Response:
        return await serving.chat(body, request)

    @router.post(
        "/embeddings", response_model=oa.EmbeddingResponse, operation_id="create_embedding"
    )
    async def embeddings(body: oa.EmbeddingRequest, request: Request) -> Response:
        return await serving.embeddings(body, request)

    @router.post(
        "/images/generations", response_model=oi.ImagesResponse, operation_id="create_image"
    )
    async def images_generations(body: oi.ImageGenerationRequest, request: Request) -> Response:
        model = server.loaded(body.model)
        servable = model.engine
        extra = oi.check_generation(body, model.model_id, servable)
        gate = serving.gate_for(model, "vm.generate", request)
        images = await gate.run(
            partial(as_vision(servable, "vm.generate").text_to_image, body.prompt, extra),
            server.opts.default_timeout_s,
            request.receive,
        )
        return _json(oi.images_response([i.image for i in images]).model_dump_json())

    @router.get("/models", response_model=oa.ModelCardList)
    async def list_models() -> Response:
        cards = [oa.ModelCard(id=m.model_id) for m in server.models() if m.status is LOADED]
        return _json(oa.ModelCardList(data=cards).model_dump_json())

    return router


def _status_router(server: ModelServer) -> APIRouter:
    router = APIRouter(tags=["status"])
    registry = server_registry(server)

    @router.get("/v1/status", response_model=ServerStatus, operation_id="server_status")
    async def status() -> Response:
        return _json(
            ServerStatus(
                address=server.address,
                admin_address=server.admin_address,
                admin_id=server.admin_id,
                # The uuid is what a join proves an assignment with: never shown here.
                models=[m.model_copy(update={"uuid": ""}) for m in server.reports()],
                engine_pids=server.engine_pids(),
                backend_errors=server.backend_errors,
                draining=server.draining,
            ).model_dump_json()
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


READY_JOIN_AGE_S = 15.0  # a join reply comes at least every poll timeout (5 s)


def _probe(probe: Probe) -> Response:
    return Response(
        probe.model_dump_json(),
        status_code=200 if probe.status == "ok" else 503,
        media_type="application/json",
    )


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
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=server.opts.max_body_bytes)  # type: ignore[arg-type]
    app.include_router(_data_router(server, auth))
    app.include_router(_openai_router(server, auth))
    app.include_router(_status_router(server))
    app.state.server = server
    return app
