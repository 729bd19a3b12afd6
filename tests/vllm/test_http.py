"""The Tiny servable through the real model server app on uvicorn: Saxml routes and OpenAI SDK.

Same engine as the in-process tests (`model_server` loaded it), so HTTP answers can be compared
with direct calls on the servable.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from sax.models.vllm import Tiny
from tests.vllm.conftest import Served, wait_running

PROMPT = "The admin server places model replicas"
GREEDY_8 = {"per_example_max_decode_steps": 8, "temperature": 0.0}


async def test_lm_generate_over_http_equals_in_process(model_server: Served, tiny: Tiny) -> None:
    [expected] = await tiny.generate(PROMPT, tiny.sampling(GREEDY_8))
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        r = await http.post(
            "/v1/models/tiny/lm.generate", json={"text": PROMPT, "extra_inputs": GREEDY_8}
        )
    assert r.status_code == 200, r.text
    [sample] = r.json()["samples"]
    assert sample["text"] == expected.text
    assert sample["score"] == pytest.approx(expected.score, abs=1e-3) and sample["score"] < 0
    assert sample["num_tokens"] == expected.num_tokens


async def test_lm_generate_stream_sse_reassembles(model_server: Served, tiny: Tiny) -> None:
    [expected] = await tiny.generate(PROMPT, tiny.sampling(GREEDY_8))
    text, events = "", []
    async with (
        httpx.AsyncClient(base_url=model_server.url) as http,
        http.stream(
            "POST",
            "/v1/models/tiny/lm.generate_stream",
            json={"text": PROMPT, "extra_inputs": GREEDY_8},
        ) as r,
    ):
        assert r.status_code == 200
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                events.append(event)
                if event == "chunk":
                    for item in data["items"]:
                        assert item["prefix_len"] == len(text)
                        text = text[: item["prefix_len"]] + item["text"]
                elif event == "done":
                    assert data["samples"][0]["text"] == expected.text
                    # Counted from the engine's token ids, not from the number of chunks.
                    assert data["samples"][0]["num_tokens"] == expected.num_tokens
    assert text == expected.text
    assert events.count("chunk") > 1 and events[-1] == "done"


async def test_lm_score_over_http(model_server: Served, tiny: Tiny) -> None:
    suffixes = [" to servers", " banana"]
    expected = await tiny.score(PROMPT, suffixes, {})
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        r = await http.post(
            "/v1/models/tiny/lm.score", json={"prefix": PROMPT, "suffixes": suffixes}
        )
    assert r.status_code == 200, r.text
    assert r.json()["scores"] == pytest.approx(expected, abs=1e-3)


async def test_bad_extra_input_is_400_naming_the_key(model_server: Served) -> None:
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        r = await http.post(
            "/v1/models/tiny/lm.generate", json={"text": "hi", "extra_inputs": {"temprature": 1}}
        )
    assert r.status_code == 400
    assert "temprature" in r.json()["error"]["message"]


async def test_client_disconnect_mid_stream_aborts_the_engine_request(
    model_server: Served, tiny: Tiny
) -> None:
    body = {"text": PROMPT, "extra_inputs": {"per_example_max_decode_steps": 400}}
    async with (
        httpx.AsyncClient(base_url=model_server.url) as http,
        http.stream("POST", "/v1/models/tiny/lm.generate_stream", json=body) as r,
    ):
        assert r.status_code == 200
        chunks = 0
        async for line in r.aiter_lines():
            chunks += line.startswith("event: chunk")
            if chunks == 2:
                break
        assert tiny.engine is not None and tiny.engine.num_unfinished == 1
    # The connection is closed: the server closes the engine iterator, which aborts.
    await wait_running(tiny, 0)


async def test_openai_sdk_chat_completions(model_server: Served, tiny: Tiny) -> None:
    messages = [{"role": "user", "content": "tell me a story"}]
    [expected] = await tiny.generate(tiny.chat_prompt(messages), tiny.sampling(GREEDY_8))
    client = openai.AsyncOpenAI(base_url=f"{model_server.url}/v1", api_key="unused")
    try:
        reply = await client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0.0
        )
        assert reply.choices[0].message.content == expected.text
        assert reply.usage is not None and reply.usage.completion_tokens == expected.num_tokens

        streamed = ""
        chunks = await client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=8, temperature=0.0, stream=True
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                streamed += chunk.choices[0].delta.content
        assert streamed == expected.text

        completion = await client.completions.create(
            model="/sax/test/tiny", prompt=PROMPT, max_tokens=8, temperature=0.0
        )
        [direct] = await tiny.generate(PROMPT, tiny.sampling(GREEDY_8))
        assert completion.choices[0].text == direct.text
    finally:
        await client.close()
