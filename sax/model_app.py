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

``vm.*`` methods are served by a servable that lists the method in ``methods`` and defines an
async ``vm_<name>(body: dict) -> dict`` (e.g. ``vm_classify``); otherwise they are 501.

OpenAI-compatible: ``POST /v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings`` and
``GET /v1/models``, usable with the ``openai`` SDK (``base_url=http://host:port/v1``); ``model``
is a short name or a full id, errors use OpenAI's ``{"error": {"message", "type", "code"}}``. They
go through the same ACLs, admission and stats as ``lm.generate[_stream]`` and ``lm.embed``.

A client that disconnects cancels its engine call (non-streamed routes watch the connection;
streamed responses close the engine iterator). Also ``GET /v1/status``, ``/healthz``,
``/metrics``, ``/docs``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from sax.allow import allowed_methods
from sax.api_docs import fastapi_app
from sax.body_limit import BodyLimit
from sax.errors import Code, SaxError, invalid
from sax.schemas import (
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    GradientRequest,
    GradientResponse,
    ReplicaStatus,
    ScoreRequest,
    ScoreResponse,
    ServerStatus,
    StreamChunk,
    StreamDone,
)
from sax.server import openai_compat as oa
from sax.server.admission import PRINCIPAL_HEADER, Gate, cancelled_on_disconnect
from sax.server.manager import Model, ModelServer
from sax.server.metrics import server_registry
from sax.server.servable import Servable
from sax.server.streaming import GenerateStream

log = logging.getLogger(__name__)

JSON = "application/json"
LOADED = ReplicaStatus.LOADED
OPENAI_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings"})
VM_METHODS = ("vm.classify", "vm.embed", "vm.generate", "vm.detect")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 403, 404, 429, 500, 501, 503, 504)
}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": oa.OpenAIError} for s in (400, 403, 404, 429, 500, 501, 503, 504)
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


def _gate(model: Model, method: str, request: Request) -> Gate:
    principal = request.headers.get(PRINCIPAL_HEADER) if model.spec.acls else None
    return model.gate(method, principal)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = f"field {'.'.join(loc)!r}: " if loc else ""
        parts.append(f"{where}{err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _error_response(request: Request, err: SaxError, status: int | None = None) -> Response:
    body = oa.error_body(err) if request.url.path in OPENAI_PATHS else err.to_body()
    return _json(json.dumps(body), status or err.http_status)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_sax_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SaxError)
        return _error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error_response(request, invalid(_validation_message(exc)))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = Code.NOT_FOUND if exc.status_code == 404 else Code.INVALID_ARGUMENT
        err = SaxError(code, f"{request.method} {request.url.path}: {exc.detail}")
        response = _error_response(request, err, exc.status_code)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(app.router.routes, request.scope)
        return response

    async def on_other(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this response, so the server logs the traceback once.
        return _error_response(request, SaxError(Code.INTERNAL, f"{type(exc).__name__}: {exc}"))

    app.add_exception_handler(SaxError, on_sax_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_other)


def _sse(event: bytes, payload: str) -> bytes:
    return b"event: " + event + b"\ndata: " + payload.encode() + b"\n\n"


async def _sax_events(stream: GenerateStream) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream.chunks():
            yield _sse(b"chunk", StreamChunk(items=chunk).model_dump_json())
        yield _sse(b"done", StreamDone(samples=stream.samples()).model_dump_json())
    except SaxError as exc:
        yield _sse(b"error", json.dumps(exc.to_body()))
    except Exception as exc:
        log.exception("Stream of %s failed", stream.gate.model_id)
        yield _sse(b"error", json.dumps(SaxError(Code.INTERNAL, repr(exc)).to_body()))


async def _openai_events(
    stream: GenerateStream, writer: oa.ChunkWriter, prompt_tokens: Callable[[], int], usage: bool
) -> AsyncIterator[bytes]:
    try:
        first = writer.first(stream.options.num_samples)
        if first is not None:
            yield first
        async for chunk in stream.chunks():
            yield writer.items(chunk)
        samples = stream.samples()
        yield writer.finish(samples)
        if usage:
            yield writer.usage(prompt_tokens(), samples)
    except SaxError as exc:
        yield b"data: " + json.dumps(oa.error_body(exc)).encode() + b"\n\n"
    except Exception as exc:
        log.exception("Stream of %s failed", stream.gate.model_id)
        err = SaxError(Code.INTERNAL, repr(exc))
        yield b"data: " + json.dumps(oa.error_body(err)).encode() + b"\n\n"
    yield oa.SSE_DONE


def _data_router(server: ModelServer) -> APIRouter:
    router = APIRouter(prefix="/v1/models/{name}", tags=["data"], responses=ERRORS)
    default_timeout = server.opts.default_timeout_s

    async def call(
        name: str,
        method: str,
        request: Request,
        timeout_s: float | None,
        make: Callable[[Servable], Callable[[], Awaitable[Any]]],
    ) -> Any:
        """Looks the model up, checks its ACL, and runs ``make(servable)`` under admission, the
        request's deadline and disconnect cancellation."""
        model = server.loaded(name)
        gate = _gate(model, method, request)
        return await gate.run(make(model.engine), timeout_s or default_timeout, request.receive)

    @router.post("/lm.generate", response_model=GenerateResponse)
    async def generate(name: str, body: GenerateRequest, request: Request) -> Response:
        def make(s: Servable) -> Callable[[], Awaitable[Any]]:
            return partial(s.generate, s.lm_prompt(body.text), s.sampling(body.extra_inputs))

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
        options = servable.sampling(body.extra_inputs)
        prompt = servable.lm_prompt(body.text)
        stream = GenerateStream(gate, servable, prompt, options, body.timeout_s or default_timeout)
        await stream.start(request.receive)
        return EventSourceResponse(
            _sax_events(stream), sep="\n", background=BackgroundTask(stream.close)
        )

    @router.post("/lm.score", response_model=ScoreResponse)
    async def score(name: str, body: ScoreRequest, request: Request) -> Response:
        scores = await call(
            name,
            "lm.score",
            request,
            body.timeout_s,
            lambda s: partial(s.score, body.prefix, body.suffixes, body.extra_inputs),
        )
        return _json(ScoreResponse(scores=scores).model_dump_json())

    @router.post("/lm.embed", response_model=EmbedResponse)
    async def embed(name: str, body: EmbedRequest, request: Request) -> Response:
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
        result = await call(
            name,
            "lm.gradient",
            request,
            body.timeout_s,
            lambda s: partial(s.gradient, body.prefix, body.suffix, body.extra_inputs),
        )
        return _json(result.model_dump_json())

    def vm_route(method: str) -> None:
        attr = method.replace(".", "_")

        async def vm(name: str, body: dict[str, Any], request: Request) -> Response:
            model = server.loaded(name)
            gate = _gate(model, method, request)
            handler = getattr(model.engine, attr, None)
            if handler is None:
                raise SaxError(
                    Code.UNIMPLEMENTED, f"model {model.model_id} does not serve {method}"
                )
            timeout = body.get("timeout_s")
            if not isinstance(timeout, int | float) or timeout <= 0:
                timeout = default_timeout
            result = await gate.run(partial(handler, body), float(timeout), request.receive)
            return _json(json.dumps(result))

        router.add_api_route(f"/{method}", vm, methods=["POST"], name=attr)

    for method in VM_METHODS:
        vm_route(method)
    return router


def _openai_router(server: ModelServer) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)
    timeout = server.opts.default_timeout_s

    async def generate_all(
        model: Model, prompts: list[str], req: oa.SamplingRequest, request: Request
    ) -> list[list[Any]]:
        servable = model.engine
        options = servable.sampling(req.extra_inputs())
        gate = _gate(model, "lm.generate", request)
        if len(prompts) == 1:
            return [
                await gate.run(
                    partial(servable.generate, prompts[0], options), timeout, request.receive
                )
            ]
        with cancelled_on_disconnect(request.receive):
            return list(
                await asyncio.gather(
                    *(gate.run(partial(servable.generate, p, options), timeout) for p in prompts)
                )
            )

    async def stream(
        model: Model, prompt: str, req: oa.SamplingRequest, request: Request, chat: bool
    ) -> Response:
        servable = model.engine
        options = servable.sampling(req.extra_inputs())
        gate = _gate(model, "lm.generate_stream", request)
        stream = GenerateStream(gate, servable, prompt, options, timeout)
        await stream.start(request.receive)
        writer = oa.ChunkWriter(req.model, chat=chat)
        events = _openai_events(
            stream, writer, partial(servable.count_tokens, prompt), req.include_usage()
        )
        return StreamingResponse(
            events, media_type="text/event-stream", background=BackgroundTask(stream.close)
        )

    @router.post(
        "/completions",
        response_model=oa.CompletionResponse,
        operation_id="create_completion",
        responses=OPENAI_STREAMED,
    )
    async def completions(body: oa.CompletionRequest, request: Request) -> Response:
        model = server.loaded(body.model)
        prompts = body.prompts()
        if body.stream:
            if len(prompts) != 1:
                raise invalid("stream=true takes exactly one prompt")
            return await stream(model, prompts[0], body, request, chat=False)
        per_prompt = await generate_all(model, prompts, body, request)
        tokens = sum(model.engine.count_tokens(p) for p in prompts)
        return _json(oa.completion_response(body.model, per_prompt, tokens).model_dump_json())

    @router.post(
        "/chat/completions",
        response_model=oa.ChatCompletionResponse,
        operation_id="create_chat_completion",
        responses=OPENAI_STREAMED,
    )
    async def chat_completions(body: oa.ChatCompletionRequest, request: Request) -> Response:
        model = server.loaded(body.model)
        prompt = model.engine.chat_prompt(body.message_dicts())
        if body.stream:
            return await stream(model, prompt, body, request, chat=True)
        (samples,) = await generate_all(model, [prompt], body, request)
        tokens = model.engine.count_tokens(prompt)
        return _json(oa.chat_response(body.model, samples, tokens).model_dump_json())

    @router.post(
        "/embeddings", response_model=oa.EmbeddingResponse, operation_id="create_embedding"
    )
    async def embeddings(body: oa.EmbeddingRequest, request: Request) -> Response:
        model = server.loaded(body.model)
        gate = _gate(model, "lm.embed", request)
        servable = model.engine
        inputs = body.inputs()
        with cancelled_on_disconnect(request.receive):
            vectors = await asyncio.gather(
                *(gate.run(partial(servable.embed, text, {}), timeout) for text in inputs)
            )
        response = oa.EmbeddingResponse(
            data=[oa.embedding_data(i, v, body.encoding_format) for i, v in enumerate(vectors)],
            model=body.model,
            usage=oa.usage(sum(servable.count_tokens(t) for t in inputs), []),
        )
        return _json(response.model_dump_json())

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
                models=server.reports(),
            ).model_dump_json()
        )

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(server: ModelServer) -> FastAPI:
    app = fastapi_app(
        title="sax model server",
        summary="Saxml data API (lm.*, vm.*) and an OpenAI-compatible subset",
        version="1",
    )
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=server.opts.max_body_bytes)  # type: ignore[arg-type]
    app.include_router(_data_router(server))
    app.include_router(_openai_router(server))
    app.include_router(_status_router(server))
    app.state.server = server
    return app
