"""`Model`: the blocking client of one published model, `AsyncModel` run on a private loop.

    m = sax.Model("/sax/test/echo")           # sax_root from the argument or SAX_ROOT
    m.lm.generate("hi")                       # [(text, score), ...], like Saxml's Python client
    m.lm.generate_samples("hi")               # [Sample(text, score, num_tokens, finish_reason)]
    for chunk in (s := m.lm.generate_stream("hi")): ...   # then s.texts, s.samples
    m.lm.score("prefix", ["a", "b"]); m.lm.embed("text"); m.lm.gradient("p", "s")
    m.vm.classify(png); m.vm.embed(png); m.vm.detect(png); m.vm.generate("a cat")
    await m.aio.lm.generate("hi")             # the same calls for asyncio (sax.client.AsyncModel)

Each method is its `sax.client.async_model` twin run on the model's `Portal` (a loop thread that
starts on the first call), so deadlines, retries, failover and streaming are those of
`AsyncModel`. A model is thread-safe; `close()` (or leaving ``with``) stops its thread, its
WatchLoc watcher and its connections, as dropping it or process exit do.
"""

from __future__ import annotations

from typing import Unpack

from sax.client.async_model import AsyncGenerateStream, AsyncLM, AsyncModel, AsyncVM, ModelOptions
from sax.client.faces import BlockingIterator, Face, Owner, blocking, forward, streaming
from sax.client.portal import Portal
from sax.client.wire import StreamResults
from sax.naming import ModelId
from sax.schemas import StreamChunk


class GenerateStream(StreamResults, BlockingIterator[StreamChunk]):
    """Iterates a generation's chunks; `texts` holds each sample's text so far, and `samples`
    the final samples (with scores) once iteration ends. `close` abandons the stream (closes its
    connection; the server aborts the generation); a ``break`` out of a ``for`` over it does
    too once the stream is dropped."""

    def __init__(self, stream: AsyncGenerateStream, portal: Portal) -> None:
        super().__init__(stream, portal)
        self.state = stream.state


class LM(Face[AsyncLM]):
    """Language-model methods (Saxml's ``LanguageModel``)."""

    generate = blocking(AsyncLM.generate)
    generate_samples = blocking(AsyncLM.generate_samples)
    generate_stream = streaming(AsyncLM.generate_stream, GenerateStream)
    score = blocking(AsyncLM.score)
    embed = blocking(AsyncLM.embed)
    gradient = blocking(AsyncLM.gradient)


class VM(Face[AsyncVM]):
    """Vision-model methods (Saxml's ``VisionModel``); images are encoded bytes (PNG, JPEG, ...)."""

    classify = blocking(AsyncVM.classify)
    embed = blocking(AsyncVM.embed)
    generate = blocking(AsyncVM.generate)
    detect = blocking(AsyncVM.detect)


class Model(Owner[AsyncModel]):
    """A published model; cheap to create (no thread or network until the first call)."""

    def __init__(self, model_id: str, **options: Unpack[ModelOptions]) -> None:
        aio = AsyncModel(model_id, **options)
        super().__init__(aio, Portal(f"sax-client{aio.model_id}"))
        self.lm = LM(aio.lm, self.portal)
        self.vm = VM(aio.vm, self.portal)

    def __repr__(self) -> str:
        return f"Model({str(self.model_id)!r})"

    @property
    def model_id(self) -> ModelId:
        return self.aio.model_id

    @property
    def sax_root(self) -> str:
        return self.aio.sax_root

    @property
    def timeout(self) -> float | None:
        return self.aio.timeout

    deadline = forward(AsyncModel.deadline)
    replicas = blocking(AsyncModel.replicas)
    call = blocking(AsyncModel.call)
    stream = streaming(AsyncModel.stream, BlockingIterator)
