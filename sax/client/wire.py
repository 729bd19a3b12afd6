"""Request bodies and response decoding for the data API.

Request bodies are built with the schema classes (one source of truth with the server) and
serialised once per call, so a retry on another replica resends the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource
from pydantic import BaseModel

from sax.errors import Code, SaxError
from sax.generation import Sample, TextFold
from sax.schemas import (
    BoundingBox,
    ClassifyRequest,
    ClassifyResponse,
    DetectRequest,
    DetectResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GradientRequest,
    ImageEmbedRequest,
    ScoreRequest,
    StreamChunk,
    StreamDone,
    TextToImageRequest,
    TextToImageResponse,
)

ExtraInputs = Mapping[str, Any]
JSON_HEADERS = {"content-type": "application/json"}


def data_path(model_name: str, method: str) -> str:
    return f"/v1/models/{model_name}/{method}"


def _timeout_s(remaining: float | None) -> float | None:
    return remaining if remaining else None


def encode(request: BaseModel) -> bytes:
    return request.model_dump_json(exclude_none=True).encode()


def generate_body(text: str, extra: ExtraInputs | None, remaining: float | None) -> bytes:
    return encode(
        GenerateRequest(text=text, extra_inputs=dict(extra or {}), timeout_s=_timeout_s(remaining))
    )


def score_body(
    prefix: str, suffixes: str | Sequence[str], extra: ExtraInputs | None, remaining: float | None
) -> bytes:
    items = [suffixes] if isinstance(suffixes, str) else list(suffixes)
    return encode(
        ScoreRequest(
            prefix=prefix,
            suffixes=items,
            extra_inputs=dict(extra or {}),
            timeout_s=_timeout_s(remaining),
        )
    )


def embed_body(text: str, extra: ExtraInputs | None, remaining: float | None) -> bytes:
    return encode(
        EmbedRequest(text=text, extra_inputs=dict(extra or {}), timeout_s=_timeout_s(remaining))
    )


def gradient_body(
    prefix: str, suffix: str, extra: ExtraInputs | None, remaining: float | None
) -> bytes:
    return encode(
        GradientRequest(
            prefix=prefix,
            suffix=suffix,
            extra_inputs=dict(extra or {}),
            timeout_s=_timeout_s(remaining),
        )
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def classify_body(image: bytes, extra: ExtraInputs | None, remaining: float | None) -> bytes:
    return encode(
        ClassifyRequest(
            image_bytes=b64(image), extra_inputs=dict(extra or {}), timeout_s=_timeout_s(remaining)
        )
    )


def image_embed_body(image: bytes, extra: ExtraInputs | None, remaining: float | None) -> bytes:
    return encode(
        ImageEmbedRequest(
            image_bytes=b64(image), extra_inputs=dict(extra or {}), timeout_s=_timeout_s(remaining)
        )
    )


def text_to_image_body(text: str, extra: ExtraInputs | None, remaining: float | None) -> bytes:
    return encode(
        TextToImageRequest(
            text=text, extra_inputs=dict(extra or {}), timeout_s=_timeout_s(remaining)
        )
    )


def detect_body(
    image: bytes, texts: Sequence[str], extra: ExtraInputs | None, remaining: float | None
) -> bytes:
    return encode(
        DetectRequest(
            image_bytes=b64(image),
            text=list(texts),
            extra_inputs=dict(extra or {}),
            timeout_s=_timeout_s(remaining),
        )
    )


def stream_error(data: str) -> SaxError:
    """The error an ``event: error`` carries (same body as an HTTP error response)."""
    try:
        return SaxError.from_response(500, json.loads(data))
    except ValueError:
        return SaxError(Code.INTERNAL, f"malformed stream error event: {data[:200]}")


@dataclass
class StreamState:
    """Folds stream chunks into per-sample texts: ``text[i] = text[i][:prefix_len] + delta``
    (`TextFold`: linear in the output however long the stream)."""

    folds: list[TextFold] = field(default_factory=list)
    samples: list[Sample] | None = None

    @property
    def texts(self) -> list[str]:
        return [f.text for f in self.folds]

    def apply(self, chunk: StreamChunk) -> None:
        for item in chunk.items:
            while len(self.folds) <= item.index:
                self.folds.append(TextFold())
            fold = self.folds[item.index]
            if not 0 <= item.prefix_len <= fold.length:
                raise SaxError(
                    Code.INTERNAL,
                    f"prefix_len {item.prefix_len} is outside the current result {fold.text!r}",
                )
            fold.apply(item.prefix_len, item.text)

    def finish(self, done: StreamDone) -> None:
        self.samples = done.samples


class StreamResults:
    """What a stream has produced so far, read from its `state`."""

    state: StreamState

    @property
    def texts(self) -> list[str]:
        """Each sample's text so far."""
        return self.state.texts

    @property
    def samples(self) -> list[Sample] | None:
        """The final samples (with scores) once the stream has ended."""
        return self.state.samples


def decode_event(event: str, data: str) -> StreamChunk | StreamDone | None:
    """A chunk, the final result, or None for an event this client does not know (ignored, so a
    newer server may add events); an error event raises its `SaxError`."""
    if event == "chunk":
        return StreamChunk.model_validate_json(data)
    if event == "done":
        return StreamDone.model_validate_json(data)
    if event == "error":
        raise stream_error(data)
    return None


async def read_events(response: httpx.Response) -> AsyncGenerator[StreamChunk | StreamDone]:
    """The chunks and final result of a streamed reply, from its server-sent events (parsed by
    `httpx_sse`); an error event raises its `SaxError`, a reply that is not an event stream
    raises `httpx_sse.SSEError` (an `httpx.TransportError`)."""
    async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
        async for event in events:
            item = decode_event(event.event, event.data)
            if item is not None:
                yield item


# Vision replies, in the shapes of Saxml's Python client.
def vm_classify(raw: bytes) -> list[tuple[str, float]]:
    """(label, probability) pairs, best first."""
    return [(t.text, t.score) for t in ClassifyResponse.model_validate_json(raw).texts]


def vm_embed(raw: bytes) -> list[float]:
    return EmbedResponse.model_validate_json(raw).embedding


def vm_generate(raw: bytes) -> list[tuple[bytes, float]]:
    """(PNG bytes, score) per image."""
    images = TextToImageResponse.model_validate_json(raw).images
    return [(base64.b64decode(i.image), i.score) for i in images]


def vm_detect(raw: bytes) -> list[BoundingBox]:
    """Boxes in pixels (cx, cy, w, h, text, score), best first."""
    return DetectResponse.model_validate_json(raw).bounding_boxes
