"""The OpenAI-compatible routes, driven by the official `openai` SDK against Echo."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.server.harness import CELL, assign, echo_server


async def test_completions_chat_embeddings_and_models() -> None:
    async with echo_server(assign("m")) as (server, url):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        done = await client.completions.create(model="m", prompt="one two three", max_tokens=8)
        assert [c.text for c in done.choices] == ["one two three"]
        assert done.usage is not None
        assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 3)

        many = await client.completions.create(model=f"{CELL}/m", prompt=["a b", "c"], n=2)
        assert [(c.index, c.text) for c in many.choices] == [
            (0, "a b"),
            (1, "a b"),
            (2, "c"),
            (3, "c"),
        ]

        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        chat = await client.chat.completions.create(model="m", messages=messages)
        assert chat.choices[0].message.role == "assistant"
        assert chat.choices[0].message.content == "user: hi\nassistant:"
        assert chat.usage is not None and chat.usage.completion_tokens == 3

        stream = await client.chat.completions.create(
            model="m",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert text == "user: hi\nassistant:" and finish == "stop"
        # A streamed sample counts its chunks: Echo sends one per space-separated word.
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 2)

        pieces = [
            c.choices[0].text
            async for c in await client.completions.create(model="m", prompt="x y z", stream=True)
            if c.choices
        ]
        assert "".join(pieces) == "x y z" and len(pieces) == 4  # three words, then the finish

        emb = await client.embeddings.create(model="m", input=["a", "b"])  # SDK asks for base64
        direct = await server.loaded("m").servable.embed("a", {})
        assert [d.index for d in emb.data] == [0, 1]
        assert emb.data[0].embedding == pytest.approx(direct, abs=1e-6)
        floats = await client.embeddings.create(model="m", input="b", encoding_format="float")
        assert floats.data[0].embedding == pytest.approx(emb.data[1].embedding, abs=1e-6)

        models = await client.models.list()
        assert [m.id for m in models.data] == [f"{CELL}/m"]

        with pytest.raises(openai.NotFoundError) as missing:
            await client.completions.create(model="nope", prompt="x")
        assert "not loaded on this server" in missing.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await client.completions.create(model="m", prompt="x", temperature=-1.0)
        assert "temperature" in bad.value.message


async def test_openai_error_shape_and_validation() -> None:
    async with echo_server(assign("m")) as (_, url), httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and "messages" in err["message"]
        r = await c.post(
            "/v1/completions", json={"model": "m", "prompt": ["a", "b"], "stream": True}
        )
        assert r.status_code == 400 and "one prompt" in r.json()["error"]["message"]
