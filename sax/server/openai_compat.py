"""The OpenAI API subset a model server speaks: request/response models and conversions.

Kept apart from `sax.schemas` because these shapes are OpenAI's, not ours. Requests ignore
fields we do not serve (``user``, ``logprobs``, ``presence_penalty``...) the way OpenAI-compatible
servers usually do, so stock SDK calls work; the fields we do serve map onto Saxml extra inputs
and go through the servable's own validation (`Servable.sampling`), so a bad value is a 400 that
names it, in OpenAI's error shape.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sax.errors import SaxError, invalid
from sax.schemas import Sample, StreamItem


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_In):
    include_usage: bool = False


class SamplingRequest(_In):
    model: str = Field(description="short model name or full id /sax/<cell>/<name>")
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def max_new_tokens(self) -> int | None:
        return None

    def extra_inputs(self) -> dict[str, Any]:
        """The Saxml extra inputs these OpenAI fields mean (absent fields keep the defaults)."""
        extra: dict[str, Any] = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if self.top_p is not None:
            extra["per_example_top_p"] = self.top_p
        if self.n != 1:
            extra["num_samples"] = self.n
        if self.seed is not None:
            extra["seed"] = self.seed
        if self.stop:
            extra["stop"] = self.stop
        max_tokens = self.max_new_tokens()
        if max_tokens is not None:
            extra["per_example_max_decode_steps"] = max_tokens
        return extra

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = 16

    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts:
            raise invalid("prompt must not be empty")
        return prompts


class ContentPart(_In):
    type: str
    text: str = ""


class ChatMessage(_In):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text":
                raise invalid(f"message content of type {part.type!r} is not supported")
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens else self.max_tokens

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class EmbeddingRequest(_In):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"

    def inputs(self) -> list[str]:
        inputs = [self.input] if isinstance(self.input, str) else self.input
        if not inputs:
            raise invalid("input must not be empty")
        return inputs


class Usage(_Out):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionChoice(_Out):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(_Out):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(_Out):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(_Out):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(_Out):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(_Out):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Out):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class EmbeddingData(_Out):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(_Out):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sax"


class ModelCardList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(_Out):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(_Out):
    error: OpenAIErrorDetail


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_body(err: SaxError) -> dict[str, Any]:
    status = err.http_status
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code.value}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, samples: list[Sample]) -> Usage:
    completion = sum(s.num_tokens for s in samples)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
    )


def completion_response(
    model: str, per_prompt: list[list[Sample]], prompt_tokens: int
) -> CompletionResponse:
    """Choices are numbered prompt-major: prompt i, sample j -> index i * n + j."""
    choices: list[CompletionChoice] = []
    flat: list[Sample] = []
    for samples in per_prompt:
        for s in samples:
            choices.append(
                CompletionChoice(index=len(choices), text=s.text, finish_reason=s.finish_reason)
            )
            flat.append(s)
    return CompletionResponse(
        id=new_id("cmpl"),
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=usage(prompt_tokens, flat),
    )


def chat_response(model: str, samples: list[Sample], prompt_tokens: int) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id=new_id("chatcmpl"),
        created=int(time.time()),
        model=model,
        choices=[
            ChatChoice(
                index=i, message=AssistantMessage(content=s.text), finish_reason=s.finish_reason
            )
            for i, s in enumerate(samples)
        ],
        usage=usage(prompt_tokens, samples),
    )


def sse(payload: BaseModel) -> bytes:
    """One OpenAI stream line: ``data: {json}`` and a blank line."""
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    """Builds the chunks of one streamed completion or chat completion, OpenAI style."""

    def __init__(self, model: str, chat: bool) -> None:
        self.chat = chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.model = model

    def _chat(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> bytes:
        return sse(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
            )
        )

    def _text(self, choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        return sse(
            CompletionResponse(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
            )
        )

    def first(self, num_samples: int) -> bytes | None:
        """Chat streams open with the assistant role, one choice per sample."""
        if not self.chat:
            return None
        return self._chat(
            [
                ChatChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                for i in range(num_samples)
            ]
        )

    def items(self, items: list[StreamItem]) -> bytes:
        if self.chat:
            return self._chat(
                [ChatChunkChoice(index=it.index, delta=Delta(content=it.text)) for it in items]
            )
        return self._text([CompletionChoice(index=it.index, text=it.text) for it in items])

    def finish(self, samples: list[Sample]) -> bytes:
        if self.chat:
            return self._chat(
                [
                    ChatChunkChoice(index=i, delta=Delta(), finish_reason=s.finish_reason)
                    for i, s in enumerate(samples)
                ]
            )
        return self._text(
            [
                CompletionChoice(index=i, text="", finish_reason=s.finish_reason)
                for i, s in enumerate(samples)
            ]
        )

    def usage(self, prompt_tokens: int, samples: list[Sample]) -> bytes:
        total = usage(prompt_tokens, samples)
        return self._chat([], total) if self.chat else self._text([], total)


def embedding_data(index: int, vector: list[float], encoding: str) -> EmbeddingData:
    """`base64` is little-endian float32, what the openai SDK asks for by default."""
    if encoding == "base64":
        raw = struct.pack(f"<{len(vector)}f", *vector)
        return EmbeddingData(index=index, embedding=base64.b64encode(raw).decode())
    return EmbeddingData(index=index, embedding=vector)
