"""The work behind the OpenAI-compatible routes: validate, admit, run, assemble.

The routes in `sax.model_app` only translate HTTP; `OpenAIServing` holds the rest, the way
vLLM's ``serving_completion.py``/``serving_chat.py`` sit beside its protocol module.

- A field sax does not implement is refused by name (`SamplingRequest.refuse_unsupported`); a
  model asked for a kind of work it does not serve is a 400 naming ``model``.
- A request with N prompts or inputs is admitted once, sized N, and its items run in a task
  group: one failure cancels the siblings and is the reply.
- Every error names the public field (``param``): engine errors name a `SamplingOptions` field
  or ``prompt``, renamed by `public_params`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from sax.errors import SaxError, internal, invalid
from sax.request_errors import public_params
from sax.schemas import Sample
from sax.server import openai_compat as oa
from sax.server.admission import Gate
from sax.server.batch import run_all
from sax.server.manager import Model, ModelServer
from sax.server.openai_images import embedding_calls, embedding_method
from sax.server.streaming import GenerateStream

log = logging.getLogger(__name__)

GateFor = Callable[[Model, str, Request], Gate]


def _json(payload: oa.BaseModel) -> Response:
    return Response(payload.model_dump_json(), media_type="application/json")


def require(model: Model, method: str, what: str) -> None:
    """INVALID_ARGUMENT naming ``model`` when its servable does not serve `method`."""
    methods = sorted(model.engine.methods)
    if method not in methods:
        raise invalid(
            f"model {model.model_id} does not serve {what}; it serves "
            f"{', '.join(methods) or 'nothing'}",
            "model",
        )


def _echoed(prompt: str, samples: list[Sample]) -> list[Sample]:
    return [s.model_copy(update={"text": prompt + s.text}) for s in samples]


class OpenAIServing:
    """Completions, chat completions and embeddings over a `ModelServer`'s loaded models."""

    def __init__(self, server: ModelServer, gate_for: GateFor) -> None:
        self.server = server
        self.gate_for = gate_for
        self.timeout_s = server.opts.default_timeout_s

    def _loaded(self, name: str) -> Model:
        """The loaded model `name`; its NOT_FOUND names ``model``."""
        try:
            return self.server.loaded(name)
        except SaxError as exc:
            exc.param = exc.param or "model"
            raise

    async def completions(self, body: oa.CompletionRequest, request: Request) -> Response:
        model = self._loaded(body.model)
        require(model, "lm.generate", "completions")
        body.refuse_unsupported()
        servable = model.engine
        prompts = [p if isinstance(p, str) else servable.token_prompt(p) for p in body.prompts()]
        with public_params(body.param_names()):
            options = servable.options(body.sampling_values())
            if body.stream:
                if len(prompts) != 1:
                    raise invalid("stream=true takes exactly one prompt", "prompt")
                echo = prompts[0] if body.echo else ""
                return await self._stream(model, prompts[0], options, body, request, echo=echo)
            gate = self.gate_for(model, "lm.generate", request)
            calls = [partial(servable.generate, p, options) for p in prompts]
            per_prompt = await gate.run(
                partial(run_all, calls), self.timeout_s, request.receive, cost=len(prompts)
            )
        if body.echo:
            per_prompt = [_echoed(p, s) for p, s in zip(prompts, per_prompt, strict=True)]
        tokens = sum(servable.count_tokens(p) for p in prompts)
        return _json(oa.completion_response(body.model, per_prompt, tokens))

    async def chat(self, body: oa.ChatCompletionRequest, request: Request) -> Response:
        model = self._loaded(body.model)
        require(model, "lm.generate", "chat completions")
        body.refuse_unsupported()
        servable = model.engine
        with public_params(body.param_names()):
            options = servable.options(body.sampling_values())
            prompt = servable.chat_prompt(body.message_dicts())
            if body.stream:
                return await self._stream(model, prompt, options, body, request)
            gate = self.gate_for(model, "lm.generate", request)
            samples = await gate.run(
                partial(servable.generate, prompt, options), self.timeout_s, request.receive
            )
        tokens = servable.count_tokens(prompt)
        return _json(oa.chat_response(body.model, samples, tokens))

    async def embeddings(self, body: oa.EmbeddingRequest, request: Request) -> Response:
        model = self._loaded(body.model)
        inputs = body.inputs()
        method = embedding_method(inputs)  # image data URLs are embedded by vm.embed
        require(model, method, "embeddings")
        servable = model.engine
        gate = self.gate_for(model, method, request)
        calls = embedding_calls(servable, inputs)
        with public_params({"prompt": "input"}):
            vectors = await gate.run(
                partial(run_all, calls), self.timeout_s, request.receive, cost=len(inputs)
            )
        encoding = body.encoding_format or "float"
        return _json(
            oa.EmbeddingResponse(
                data=[oa.embedding_data(i, v, encoding) for i, v in enumerate(vectors)],
                model=body.model,
                usage=oa.usage(
                    0 if method == "vm.embed" else sum(servable.count_tokens(t) for t in inputs),
                    [],
                ),
            )
        )

    async def _stream(
        self,
        model: Model,
        prompt: str,
        options: Any,
        body: oa.SamplingRequest,
        request: Request,
        echo: str = "",
    ) -> Response:
        servable = model.engine
        gate = self.gate_for(model, "lm.generate_stream", request)
        stream = GenerateStream(gate, servable, prompt, options, self.timeout_s)
        await stream.start(request.receive)
        chat = isinstance(body, oa.ChatCompletionRequest)
        writer = oa.ChunkWriter(body.model, chat=chat)
        events = _events(
            stream,
            writer,
            partial(servable.count_tokens, prompt),
            body.include_usage(),
            body.param_names(),
            echo,
        )
        return StreamingResponse(
            events, media_type="text/event-stream", background=BackgroundTask(stream.close)
        )


async def _events(
    stream: GenerateStream,
    writer: oa.ChunkWriter,
    prompt_tokens: Callable[[], int],
    usage: bool,
    names: dict[str, str],
    echo: str,
) -> AsyncIterator[bytes]:
    """OpenAI stream lines: (the role,) (the echoed prompt,) deltas, finish, (usage,) [DONE].
    A failure after the first byte is one ``data: {"error": ...}`` line before [DONE]."""
    n = stream.options.num_samples
    try:
        with public_params(names):
            first = writer.first(n)
            if first is not None:
                yield first
            if echo:
                yield writer.echo(echo, n)
            async for chunk in stream.chunks():
                yield writer.items(chunk)
            samples = stream.samples()
            yield writer.finish(samples)
            if usage:
                yield writer.usage(prompt_tokens(), samples)
    except SaxError as exc:
        yield b"data: " + json.dumps(oa.error_body(exc)).encode() + b"\n\n"
    except Exception as exc:
        err = internal(exc, f"stream of {stream.gate.model_id}", log)
        yield b"data: " + json.dumps(oa.error_body(err)).encode() + b"\n\n"
    yield oa.SSE_DONE
