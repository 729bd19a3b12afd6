"""The serving classes behind the routes, driven without HTTP: a request model in, a response
model or an event stream out."""

from __future__ import annotations

import pytest

from sax.errors import Code, SaxError
from sax.schemas import GenerateRequest, GenerateResponse, ReplicaStatus, ScoreRequest
from sax.server.admission import Gate
from sax.server.data_serving import DATA_METHODS, DataServing
from sax.server.manager import ModelServer, Replica
from sax.server.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionRequest,
)
from sax.server.openai.serving import OpenAIServing
from sax.server.openai.serving_chat import OpenAIServingChat
from sax.server.streaming import EventStream
from tests.server.harness import CELL, assign, options


def gates(replica: Replica, method: str) -> Gate:
    """Every caller admitted (no ACLs)."""
    return replica.gate(method)


async def loaded_server() -> ModelServer:
    server = ModelServer(options())
    await server.apply([assign("m")])
    await server.wait_until(lambda: server.status(f"{CELL}/m") is ReplicaStatus.LOADED, 30)
    return server


async def wire(stream: EventStream) -> bytes:
    """The stream's bytes as a response sends them; then closes it."""
    try:
        return b"".join([event.encode() async for event in stream.events])
    finally:
        await stream.close()


async def test_data_methods_run_without_http() -> None:
    server = await loaded_server()
    serving = DataServing(server)
    generate = next(m for m in DATA_METHODS if m.method == "lm.generate")
    reply = await serving.unary(generate, "m", GenerateRequest(text="hi there"), gates)
    assert isinstance(reply, GenerateResponse) and reply.samples[0].text == "hi there"
    score = next(m for m in DATA_METHODS if m.method == "lm.score")
    with pytest.raises(SaxError) as err:
        body = ScoreRequest(prefix="a", suffixes=["b"], extra_inputs={"seed": 1})
        await serving.unary(score, "m", body, gates)
    assert err.value.code is Code.INVALID_ARGUMENT and err.value.param == "extra_inputs.seed"
    stream = await serving.generate_stream("m", GenerateRequest(text="a b"), gates)
    text = await wire(stream)
    assert text.startswith(b"event: chunk\ndata: {") and b"\n\nevent: done\ndata: {" in text
    assert server.loaded("m").gates["lm.generate_stream"].stats.pending == 0
    await server.shutdown()


async def test_chat_completions_run_without_http() -> None:
    server = await loaded_server()
    chat = OpenAIServingChat(server)
    messages = [ChatMessage(role="user", content="hello")]
    reply = await chat.create(ChatCompletionRequest(model="m", messages=messages), gates)
    assert isinstance(reply, ChatCompletionResponse) and reply.choices[0].message.content
    body = ChatCompletionRequest(model="m", messages=messages, stream=True)
    stream = await chat.create(body, gates)
    assert isinstance(stream, EventStream)
    text = await wire(stream)
    assert text.startswith(b'data: {"id":"chatcmpl-') and text.endswith(b"\n\ndata: [DONE]\n\n")
    with pytest.raises(SaxError) as err:
        await chat.create(ChatCompletionRequest(model="nope", messages=messages), gates)
    assert err.value.code is Code.NOT_FOUND and err.value.param == "model"
    await server.shutdown()


async def test_openai_requests_ask_the_engine_for_no_score() -> None:
    """OpenAI responses carry no Saxml score, so the engine is told not to track one (the
    log-probs a request asks for are mapped in tests/vllm/test_internals.py)."""
    server = await loaded_server()
    servable = server.loaded("m").servable
    messages = [ChatMessage(role="user", content="hello")]
    bodies = [
        CompletionRequest(model="m", prompt="a"),
        ChatCompletionRequest(model="m", messages=messages),
    ]
    for body in bodies:
        options = OpenAIServing.options(servable, body)
        assert options.score is False and options.logprobs is None, body
    await server.shutdown()
