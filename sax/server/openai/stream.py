"""OpenAI's streamed completions: ``data: {chunk}`` events, then ``data: [DONE]``.

A `ChunkWriter` turns one stream's engine chunks into OpenAI chunk objects (chat and completions
each have one, in their serving modules); `openai_events` drives it over a started
`GenerateStream`.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar

from pydantic import BaseModel
from sse_starlette import ServerSentEvent

from sax.errors import SaxError, internal
from sax.generation import Sample, StreamItem
from sax.request_errors import public_params
from sax.server.openai.protocol import Usage, error_body, new_id, usage
from sax.server.streaming import GenerateStream, sse_event

log = logging.getLogger(__name__)

DONE = sse_event("[DONE]")


def data_event(payload: BaseModel) -> ServerSentEvent:
    """One OpenAI stream event: ``data: {json}`` and a blank line."""
    return sse_event(payload.model_dump_json())


class ChunkWriter(abc.ABC):
    """The chunk events of one streamed response; all carry one id and creation time."""

    id_prefix: ClassVar[str]

    def __init__(self, model: str) -> None:
        self.id = new_id(self.id_prefix)
        self.created = int(time.time())
        self.model = model

    def opening(self, num_samples: int) -> list[ServerSentEvent]:
        """Events before the engine's first chunk."""
        return []

    @abc.abstractmethod
    def items(self, items: list[StreamItem]) -> ServerSentEvent:
        """One engine chunk: a text delta per sample it advanced."""

    @abc.abstractmethod
    def finish(self, samples: list[Sample]) -> ServerSentEvent:
        """Every sample's finish reason."""

    @abc.abstractmethod
    def usage(self, total: Usage) -> ServerSentEvent:
        """The token counts (``stream_options.include_usage``): a chunk without choices."""


async def openai_events(
    stream: GenerateStream,
    writer: ChunkWriter,
    prompt_tokens: Callable[[], int],
    include_usage: bool,
    names: Mapping[str, str],
) -> AsyncIterator[ServerSentEvent]:
    """(The writer's opening,) deltas, finish, (usage,) [DONE]. A failure after the first byte
    is one ``data: {"error": ...}`` event in OpenAI's shape before [DONE]."""
    try:
        with public_params(names):
            for event in writer.opening(stream.options.num_samples):
                yield event
            async for chunk in stream.chunks():
                yield writer.items(chunk)
            samples = stream.samples()
            yield writer.finish(samples)
            if include_usage:
                yield writer.usage(usage(prompt_tokens(), samples))
    except SaxError as exc:
        yield sse_event(json.dumps(error_body(exc)))
    except Exception as exc:
        err = internal(exc, f"stream of {stream.gate.model_id}", log)
        yield sse_event(json.dumps(error_body(err)))
    yield DONE
