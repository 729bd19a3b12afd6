"""What a generation engine takes and returns, whatever the engine and whatever the wire.

`SamplingOptions` is one request's sampling, already checked (the server's `sax.server.sampling`
builds it from a Saxml route's extra inputs or an OpenAI route's fields). An engine answers with
`Sample`s (``lm.generate``) or, per decode step, `StreamItem`s (``lm.generate_stream``), each
generated token optionally with its `TokenLogprob`.

The result types are pydantic models because they are also the bodies the data API sends:
`sax.schemas` uses them as field types, so the OpenAPI specs describe exactly what the engines
return. Engines import this module, never the server or its schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class SamplingOptions:
    """One request's sampling; the defaults mean "off" for every optional knob."""

    temperature: float = 0.0
    max_decode_steps: int = 64
    top_k: int = 0  # 0 = disabled
    top_p: float = 1.0
    num_samples: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    min_p: float = 0.0
    min_tokens: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    logit_bias: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    logprobs: int | None = None  # per generated token: None = none, k = with the top k
    json_object: bool = False  # structured output: any JSON object
    json_schema: str | None = None  # structured output: JSON matching this schema (JSON text)
    # False: the caller reads no `Sample.score` (the OpenAI routes, unless they ask for
    # logprobs), so an engine may skip tracking log-probs; the score is then 0.0.
    score: bool = True


class _Result(BaseModel):
    # As `sax.schemas.Response`: lenient, so an older client reads a newer server.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class TopLogprob(_Result):
    token: str
    token_id: int
    logprob: float


class TokenLogprob(_Result):
    """One generated token: its log-probability (natural log, >= -9999) and, most likely
    first, the top alternatives the request asked for."""

    token: str
    token_id: int
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)


class Sample(_Result):
    text: str
    score: float = Field(description="cumulative log-probability of the generated tokens")
    num_tokens: int = 0
    finish_reason: str = "stop"
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="per generated token, when the request asked for them"
    )


class StreamItem(_Result):
    """One sample's progress: the full text is ``acc[:prefix_len] + text``."""

    index: int
    text: str
    prefix_len: int
    score: float
    num_tokens: int = Field(
        default=0, description="tokens generated for this sample so far; 0 = unknown"
    )
    finish_reason: str | None = Field(
        default=None, description="set on the sample's last item: the engine's stop, length..."
    )
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="this step's tokens, when the request asked for log-probs"
    )


class TextFold:
    """One sample's text folded from `StreamItem` deltas: ``text = text[:prefix_len] + delta``.

    Appending (``prefix_len`` equal to the length so far, every step of an ordinary stream)
    costs the delta's length, not the text's: parts are joined only when `text` is read or an
    item rewinds, so a long stream stays linear in its output. Raises ValueError when
    ``prefix_len`` is negative or beyond the text so far.
    """

    __slots__ = ("_parts", "length")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.length = 0  # characters so far

    def apply(self, prefix_len: int, delta: str) -> None:
        if not 0 <= prefix_len <= self.length:
            raise ValueError(f"prefix_len {prefix_len} is outside the text so far ({self.length})")
        if prefix_len < self.length:
            self._parts = [self.text[:prefix_len]]
            self.length = prefix_len
        if delta:
            self._parts.append(delta)
            self.length += len(delta)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""
