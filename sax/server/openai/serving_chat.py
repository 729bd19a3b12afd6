"""``POST /v1/chat/completions``: messages through the model's chat template, then
``lm.generate``; a stream opens with the assistant role."""

from __future__ import annotations

import time
from functools import partial

from sse_starlette import ServerSentEvent

from sax.generation import Sample, StreamItem, TokenLogprob
from sax.request_errors import public_params
from sax.server.access import GateFor
from sax.server.admission import Receive
from sax.server.openai.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatTokenLogprob,
    ChatTopLogprob,
    Delta,
    Usage,
    new_id,
    usage,
)
from sax.server.openai.serving import OpenAIServing, require
from sax.server.openai.stream import ChunkWriter, data_event
from sax.server.streaming import EventStream


def chat_logprobs(tokens: list[TokenLogprob] | None) -> ChatLogprobs | None:
    """Chat log-probs: per token its text, UTF-8 bytes, log-prob and top alternatives."""
    if tokens is None:
        return None
    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.token.encode()),
                top_logprobs=[
                    ChatTopLogprob(token=a.token, logprob=a.logprob, bytes=list(a.token.encode()))
                    for a in t.top
                ],
            )
            for t in tokens
        ]
    )


def chat_response(model: str, samples: list[Sample], prompt_tokens: int) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id=new_id("chatcmpl"),
        created=int(time.time()),
        model=model,
        choices=[
            ChatChoice(
                index=i,
                message=AssistantMessage(content=s.text),
                logprobs=chat_logprobs(s.logprobs),
                finish_reason=s.finish_reason,
            )
            for i, s in enumerate(samples)
        ],
        usage=usage(prompt_tokens, samples),
    )


class ChatChunks(ChunkWriter):
    """``chat.completion.chunk`` events."""

    id_prefix = "chatcmpl"

    def _chunk(self, choices: list[ChatChunkChoice], total: Usage | None = None) -> ServerSentEvent:
        return data_event(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=total
            )
        )

    def opening(self, num_samples: int) -> list[ServerSentEvent]:
        """The assistant role, one choice per sample."""
        return [
            self._chunk(
                [
                    ChatChunkChoice(index=i, delta=Delta(role="assistant", content=""))
                    for i in range(num_samples)
                ]
            )
        ]

    def items(self, items: list[StreamItem]) -> ServerSentEvent:
        return self._chunk(
            [
                ChatChunkChoice(
                    index=it.index,
                    delta=Delta(content=it.text),
                    logprobs=chat_logprobs(it.logprobs),
                )
                for it in items
            ]
        )

    def finish(self, samples: list[Sample]) -> ServerSentEvent:
        return self._chunk(
            [
                ChatChunkChoice(index=i, delta=Delta(), finish_reason=s.finish_reason)
                for i, s in enumerate(samples)
            ]
        )

    def usage(self, total: Usage) -> ServerSentEvent:
        return self._chunk([], total)


class OpenAIServingChat(OpenAIServing):
    async def create(
        self, body: ChatCompletionRequest, gates: GateFor, receive: Receive | None = None
    ) -> ChatCompletionResponse | EventStream:
        replica = self.loaded(body.model)
        require(replica, "lm.generate", "chat completions")
        body.refuse_unsupported()
        servable = replica.servable
        with public_params(body.param_names()):
            options = self.options(servable, body)
            prompt = servable.chat_prompt(body.message_dicts())
            if body.stream:
                writer = ChatChunks(body.model)
                return await self.stream(replica, prompt, options, body, writer, gates, receive)
            gate = gates(replica, "lm.generate")
            samples = await gate.run(
                partial(servable.generate, prompt, options), self.timeout_s, receive
            )
        tokens = servable.count_tokens(prompt)
        return chat_response(body.model, samples, tokens)
