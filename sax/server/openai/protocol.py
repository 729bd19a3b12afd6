"""The OpenAI API subset a model server speaks: its request and response models.

Kept apart from `sax.schemas` because these shapes are OpenAI's, not ours; the serving classes
beside this module (``serving_*.py``) turn requests into servable calls and samples into these
responses. Requests follow
vLLM's OpenAI server: the fields it honours map onto `SamplingOptions` with OpenAI's and vLLM's
ranges (finite floats only; ``null`` means omitted), and the servable refuses by name any it
does not implement. Fields sax does not serve (``tools``, ``suffix``...)
are a 400 naming them, as are unknown fields; only ``user``, ``metadata`` and ``store``, which
do not change the answer, are accepted and ignored. Errors use OpenAI's shape with ``param``
set to the public field.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from sax.errors import SaxError, invalid
from sax.generation import Sample
from sax.server.sampling import MAX_LOGPROBS, MAX_SAMPLES

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class _In(BaseModel):
    # Unknown fields are a 400 naming them (OpenAI's own behaviour); floats must be finite.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_In):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = Field(False, description="not supported: 400 if true")


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)

    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_In):
    """``text``; ``json_object`` (any JSON object); ``json_schema`` (JSON matching
    ``json_schema.schema``): structured output through the engine's guided decoding."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class SamplingRequest(_In):
    """Fields shared by completions and chat completions, with OpenAI's and vLLM's ranges.

    ``null`` means omitted for every field. Sampling fields left out take the published model's
    defaults (its overrides), not OpenAI's ``temperature=1``.
    """

    model: str = Field(description="short model name or full id /sax/<cell>/<name>")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="vLLM extension; -1 or 0 = disabled")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM extension")
    n: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="samples per prompt")
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(None, description="vLLM extension")
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2, description="vLLM extension")
    logit_bias: dict[str, float] | None = Field(None, description="token id -> [-100, 100]")
    min_tokens: int | None = Field(None, ge=0, description="vLLM extension")
    ignore_eos: bool | None = Field(None, description="vLLM extension")
    skip_special_tokens: bool | None = Field(None, description="vLLM extension")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = Field(None, description="structured output")
    user: str | None = Field(None, description="accepted and ignored")

    def max_new_tokens(self) -> tuple[int | None, str]:
        """The requested new-token limit and the field that set it."""
        return None, "max_tokens"

    def sampling_values(self) -> dict[str, tuple[Any, str]]:
        """SamplingOptions field -> (value, public field name), for the fields given."""
        given: dict[str, tuple[Any, str]] = {}
        for public, option in _SAMPLING_FIELDS.items():
            value = getattr(self, public)
            if value is not None:
                given[option] = (value, public)
        limit, public = self.max_new_tokens()
        if limit is not None:
            given["max_decode_steps"] = (limit, public)
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            given["json_object"] = (True, "response_format")
        elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
            given["json_schema"] = (fmt.json_schema.json_schema, "response_format.json_schema")
        return given

    def param_names(self) -> dict[str, str]:
        """SamplingOptions field (and ``prompt``) -> the public field an engine error names."""
        names = {option: public for public, option in _SAMPLING_FIELDS.items()}
        names["max_decode_steps"] = self.max_new_tokens()[1]
        names["json_schema"] = "response_format.json_schema"
        names["prompt"] = self.prompt_field
        return names

    prompt_field: ClassVar[str] = "prompt"

    def refuse_unsupported(self) -> None:
        """Fields sax does not implement, set to anything that would change the answer: 400."""
        if self.stream_options is not None and self.stream_options.continuous_usage_stats:
            raise _unsupported("stream_options.continuous_usage_stats")
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options is only allowed with stream=true", "stream_options")
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None or fmt.json_schema.json_schema is None:
                raise invalid(
                    "response_format of type json_schema needs json_schema.schema",
                    "response_format.json_schema",
                )

    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)


# OpenAI / vLLM request field -> SamplingOptions field.
_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "n": "num_samples",
    "stop": "stop",
    "stop_token_ids": "stop_token_ids",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty",
    "logit_bias": "logit_bias",
    "min_tokens": "min_tokens",
    "ignore_eos": "ignore_eos",
    "skip_special_tokens": "skip_special_tokens",
}


def _unsupported(param: str, message: str | None = None) -> SaxError:
    return invalid(message or f"{param} is not supported by this server", param)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="one prompt or a batch, as text or token ids"
    )
    max_tokens: int | None = Field(16, ge=1, description="null = the default, 16")
    echo: bool | None = Field(False, description="prepend the prompt to each choice's text")
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="log-probs of each token and its top alternatives"
    )
    suffix: str | None = Field(None, description="not supported: 400 if set")
    best_of: int | None = Field(None, ge=1, description="only 1 or n")

    def max_new_tokens(self) -> tuple[int | None, str]:
        return (16 if self.max_tokens is None else self.max_tokens), "max_tokens"

    def sampling_values(self) -> dict[str, tuple[Any, str]]:
        given = super().sampling_values()
        if self.logprobs is not None:
            given["logprobs"] = (self.logprobs, "logprobs")
        return given

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.echo and self.logprobs is not None:
            raise _unsupported("echo", "echo with logprobs (prompt log-probs) is not supported")
        if self.suffix is not None:
            raise _unsupported("suffix")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise _unsupported("best_of", "best_of other than n is not supported")

    def prompts(self) -> list[str | list[int]]:
        """The batch: each prompt as text or as token ids."""
        p = self.prompt
        prompts: list[str | list[int]]
        if isinstance(p, str):
            prompts = [p]
        elif p and all(isinstance(t, int) for t in p):
            prompts = [[int(t) for t in p if isinstance(t, int)]]
        else:
            prompts = [x for x in p if isinstance(x, str | list)]
        if not prompts or any(len(x) == 0 for x in prompts if isinstance(x, list)):
            raise invalid("prompt must not be empty", "prompt")
        return prompts


class ContentPart(_In):
    type: str
    text: str = ""


class ChatMessage(BaseModel):
    # Messages tolerate OpenAI's other message fields (name, tool_call_id...), which do not
    # reach the template; content parts other than text are refused.
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text":
                raise invalid(
                    f"messages.{index}.content: parts of type {part.type!r} are not supported",
                    f"messages.{index}.content",
                )
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="deprecated alias")
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = Field(False, description="log-probs of each generated token")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="needs logprobs")
    tools: list[dict[str, Any]] | None = Field(None, description="not supported: 400 if given")
    tool_choice: str | dict[str, Any] | None = Field(None, description="only 'none'")
    parallel_tool_calls: bool | None = Field(None, description="accepted; no tools are served")
    metadata: dict[str, str] | None = Field(None, description="accepted and ignored")
    store: bool | None = Field(None, description="accepted and ignored")

    prompt_field: ClassVar[str] = "messages"

    def max_new_tokens(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs and not self.logprobs:
            raise invalid("top_logprobs requires logprobs=true", "top_logprobs")
        if self.tools:
            raise _unsupported("tools", "tools are not supported by this server")
        if self.tool_choice not in (None, "none"):
            raise _unsupported("tool_choice", "tool_choice other than 'none' is not supported")

    def sampling_values(self) -> dict[str, tuple[Any, str]]:
        given = super().sampling_values()
        if self.logprobs:
            given["logprobs"] = (self.top_logprobs or 0, "logprobs")
        return given

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text(i)} for i, m in enumerate(self.messages)]


class EmbeddingRequest(_In):
    model: str
    input: str | list[str] = Field(description="one text or a batch; token-id inputs: 400")
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1, description="not supported: 400 if set")
    user: str | None = Field(None, description="accepted and ignored")

    def inputs(self) -> list[str]:
        if self.dimensions is not None:
            raise _unsupported("dimensions", "dimensions is not supported by this model")
        inputs = [self.input] if isinstance(self.input, str) else self.input
        if not inputs:
            raise invalid("input must not be empty", "input")
        return inputs


class Usage(_Out):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionLogprobs(_Out):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ChatTopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Out):
    content: list[ChatTokenLogprob] | None = None


class CompletionChoice(_Out):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
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
    logprobs: ChatLogprobs | None = None
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
    logprobs: ChatLogprobs | None = None
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


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    model: str
    n: int = Field(1, ge=1, description="images; at most the model's max_samples")
    size: str | None = Field(None, description="'auto' or the model's own 'WxH'")
    response_format: Literal["b64_json", "url"] | None = Field(
        None, description="b64_json only: images come back inline"
    )
    output_format: Literal["png"] | None = None
    quality: str | None = Field(None, description="accepted and ignored")
    style: str | None = Field(None, description="accepted and ignored")
    user: str | None = Field(None, description="accepted and ignored")


class ImageData(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


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
    return {
        "error": {"message": err.message, "type": kind, "param": err.param, "code": err.code.value}
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, samples: list[Sample]) -> Usage:
    completion = sum(s.num_tokens for s in samples)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
    )
