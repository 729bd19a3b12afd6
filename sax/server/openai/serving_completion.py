"""``POST /v1/completions``: one prompt or a batch, as text or token ids, through ``lm.generate``.

Choices are numbered prompt-major (prompt i, sample j -> index i * n + j); ``echo`` prepends
the prompt to each choice; a stream takes exactly one prompt.
"""

from __future__ import annotations

import time
from functools import partial

from sse_starlette import ServerSentEvent

from sax.batch import run_all
from sax.errors import invalid
from sax.generation import Sample, StreamItem, TokenLogprob
from sax.request_errors import public_params
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.openai.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
    new_id,
    usage,
)
from sax.server.openai.serving import OpenAIServing, require
from sax.server.openai.stream import ChunkWriter, data_event
from sax.server.streaming import EventStream


def completion_logprobs(
    tokens: list[TokenLogprob] | None, offset: int = 0
) -> CompletionLogprobs | None:
    """Completions' log-probs: per token its text, log-prob, the top alternatives with the
    token itself (as vLLM and OpenAI list them), and its character offset from `offset`."""
    if tokens is None:
        return None
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{**{a.token: a.logprob for a in t.top}, t.token: t.logprob} for t in tokens],
        text_offset=offsets,
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
                CompletionChoice(
                    index=len(choices),
                    text=s.text,
                    logprobs=completion_logprobs(s.logprobs),
                    finish_reason=s.finish_reason,
                )
            )
            flat.append(s)
    return CompletionResponse(
        id=new_id("cmpl"),
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=usage(prompt_tokens, flat),
    )


def _echoed(prompt: str, samples: list[Sample]) -> list[Sample]:
    return [s.model_copy(update={"text": prompt + s.text}) for s in samples]


class CompletionChunks(ChunkWriter):
    """``text_completion`` chunks; with `echo`, the prompt opens every sample's text."""

    id_prefix = "cmpl"

    def __init__(self, model: str, echo: str = "") -> None:
        super().__init__(model)
        self.echo = echo
        self._offsets: dict[int, int] = {}  # characters sent per choice

    def _chunk(
        self, choices: list[CompletionChoice], total: Usage | None = None
    ) -> ServerSentEvent:
        return data_event(
            CompletionResponse(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=total
            )
        )

    def opening(self, num_samples: int) -> list[ServerSentEvent]:
        if not self.echo:
            return []
        return [
            self._chunk([CompletionChoice(index=i, text=self.echo) for i in range(num_samples)])
        ]

    def items(self, items: list[StreamItem]) -> ServerSentEvent:
        choices = []
        for it in items:
            offset = self._offsets.get(it.index, 0)
            choices.append(
                CompletionChoice(
                    index=it.index, text=it.text, logprobs=completion_logprobs(it.logprobs, offset)
                )
            )
            self._offsets[it.index] = offset + len(it.text)
        return self._chunk(choices)

    def finish(self, samples: list[Sample]) -> ServerSentEvent:
        return self._chunk(
            [
                CompletionChoice(index=i, text="", finish_reason=s.finish_reason)
                for i, s in enumerate(samples)
            ]
        )

    def usage(self, total: Usage) -> ServerSentEvent:
        return self._chunk([], total)


class OpenAIServingCompletion(OpenAIServing):
    async def create(
        self, body: CompletionRequest, gates: GateFor, receive: Receive | None = None
    ) -> CompletionResponse | EventStream:
        replica = self.loaded(body.model)
        require(replica, "lm.generate", "completions")
        body.refuse_unsupported()
        servable = replica.servable
        prompts = [p if isinstance(p, str) else servable.token_prompt(p) for p in body.prompts()]
        with public_params(body.param_names()):
            options = self.options(servable, body)
            if body.stream:
                if len(prompts) != 1:
                    raise invalid("stream=true takes exactly one prompt", "prompt")
                writer = CompletionChunks(body.model, echo=prompts[0] if body.echo else "")
                return await self.stream(replica, prompts[0], options, body, writer, gates, receive)
            gate = gates(replica, "lm.generate")
            calls = [partial(servable.generate, p, options) for p in prompts]
            per_prompt = await gate.run(
                partial(run_all, calls), self.timeout_s, receive, cost=len(prompts)
            )
        if body.echo:
            per_prompt = [_echoed(p, s) for p, s in zip(prompts, per_prompt, strict=True)]
        tokens = sum(servable.count_tokens(p) for p in prompts)
        return completion_response(body.model, per_prompt, tokens)
