"""Bad input on every route is a 400 naming the public field, never a 500 or an internal key.

Driven against the Echo servable over real HTTP: these are edge-validation and error-shape
checks, which do not depend on an engine (tests/vllm/test_openai_fidelity.py covers the engine).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server.harness import assign, echo_server

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
GENERATE = "/v1/models/m/lm.generate"
STREAM = "/v1/models/m/lm.generate_stream"
SCORE = "/v1/models/m/lm.score"
EMBED = "/v1/models/m/lm.embed"

PROMPT = {"model": "m", "prompt": "hello"}
MESSAGES = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
JSON_HEADERS = {"content-type": "application/json"}
INTERNAL_WORDS = ("per_example", "decode_steps", "num_samples", "Error:", "Traceback")


def _openai_error(r: httpx.Response, param: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "INVALID_ARGUMENT"
    assert err["param"] == param, err
    assert not any(w in err["message"] for w in INTERNAL_WORDS), err["message"]
    return dict(err)


def _sax_error(r: httpx.Response, param: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "INVALID_ARGUMENT" and err["param"] == param, err
    return dict(err)


def _raw(body: dict[str, Any], field: str, literal: str) -> bytes:
    """`body` as JSON with `field` set to a non-standard literal (NaN, Infinity, 1e400)."""
    import json

    text = json.dumps({**body, field: "@@"})
    return text.replace('"@@"', literal).encode()


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]


@pytest_asyncio.fixture(loop_scope="function")
async def url() -> Any:
    async with echo_server(assign("m")) as (_, base):
        yield base


@pytest.mark.parametrize("literal", [*NON_FINITE, "5", "-0.5"])
@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
@pytest.mark.parametrize("stream", [False, True])
async def test_temperature_out_of_range_or_not_finite(
    url: str, path: str, literal: str, stream: bool
) -> None:
    body = {**(PROMPT if path == COMPLETIONS else MESSAGES), "stream": stream}
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(path, content=_raw(body, "temperature", literal), headers=JSON_HEADERS)
    _openai_error(r, "temperature")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_p", "NaN"),
        ("top_p", "0"),
        ("top_p", "1.5"),
        ("presence_penalty", "Infinity"),
        ("presence_penalty", "2.5"),
        ("frequency_penalty", "-3"),
        ("repetition_penalty", "0"),
        ("min_p", "1e400"),
        ("n", "0"),
        ("top_k", "-2"),
        ("seed", "1e30"),
        ("min_tokens", "-1"),
    ],
)
async def test_every_float_and_limit_field_is_checked(url: str, field: str, value: str) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        for path, body in ((COMPLETIONS, PROMPT), (CHAT, MESSAGES)):
            r = await c.post(path, content=_raw(body, field, value), headers=JSON_HEADERS)
            _openai_error(r, field)


async def test_zero_and_negative_limits_name_their_public_field(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        for stream in (False, True):
            r = await c.post(CHAT, json={**MESSAGES, "max_completion_tokens": 0, "stream": stream})
            _openai_error(r, "max_completion_tokens")
            r = await c.post(CHAT, json={**MESSAGES, "max_tokens": -1, "stream": stream})
            _openai_error(r, "max_tokens")
            r = await c.post(COMPLETIONS, json={**PROMPT, "max_tokens": 0, "stream": stream})
            _openai_error(r, "max_tokens")
            # Beyond the server's own cap, still named by the public field.
            r = await c.post(COMPLETIONS, json={**PROMPT, "max_tokens": 10**6, "stream": stream})
            _openai_error(r, "max_tokens")
        for path in (GENERATE, STREAM):
            r = await c.post(
                path, json={"text": "x", "extra_inputs": {"per_example_max_decode_steps": 0}}
            )
            _sax_error(r, "extra_inputs.per_example_max_decode_steps")
            r = await c.post(
                path, content=_raw({"text": "x"}, "timeout_s", "NaN"), headers=JSON_HEADERS
            )
            _sax_error(r, "timeout_s")


async def test_null_means_omitted(url: str) -> None:
    nulls = {
        "max_tokens": None,
        "temperature": None,
        "n": None,
        "stop": None,
        "seed": None,
        "top_p": None,
        "stream": None,
        "echo": None,
        "logprobs": None,
        "user": None,
    }
    async with httpx.AsyncClient(base_url=url) as c:
        with_nulls = await c.post(COMPLETIONS, json={**PROMPT, **nulls})
        omitted = await c.post(COMPLETIONS, json=PROMPT)
        chat = await c.post(CHAT, json={**MESSAGES, "max_completion_tokens": None, "n": None})
        emb = await c.post(EMBEDDINGS, json={"model": "m", "input": "x", "encoding_format": None})
    assert with_nulls.status_code == omitted.status_code == 200, with_nulls.text
    assert with_nulls.json()["choices"] == omitted.json()["choices"]
    assert chat.status_code == 200 and len(chat.json()["choices"]) == 1
    assert emb.status_code == 200 and isinstance(emb.json()["data"][0]["embedding"], list)


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        # Echo has no log-probs to give: refused, where vLLM servables honour them.
        (COMPLETIONS, {"logprobs": 2}, "logprobs"),
        (COMPLETIONS, {"logprobs": 21}, "logprobs"),
        (COMPLETIONS, {"echo": True, "logprobs": 1}, "echo"),
        (COMPLETIONS, {"suffix": "x"}, "suffix"),
        (COMPLETIONS, {"best_of": 3}, "best_of"),
        (COMPLETIONS, {"prompt": [1, 2, 3]}, "prompt"),
        # Echo has no guided decoding: structured output is refused by name.
        (COMPLETIONS, {"response_format": {"type": "json_object"}}, "response_format"),
        (CHAT, {"response_format": {"type": "yaml"}}, "response_format.type"),
        (COMPLETIONS, {"stream_options": {"include_usage": True}}, "stream_options"),
        (COMPLETIONS, {"temprature": 0.5}, "temprature"),
        (CHAT, {"logprobs": True}, "logprobs"),
        (CHAT, {"top_logprobs": 3}, "top_logprobs"),
        (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        (CHAT, {"tool_choice": "required"}, "tool_choice"),
        (CHAT, {"audio": {"voice": "x"}}, "audio"),
        (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
        ),
        # Echo does not implement penalties or biases: refused, never silently dropped.
        (CHAT, {"presence_penalty": 1.0}, "presence_penalty"),
        (CHAT, {"logit_bias": {"5": 10}}, "logit_bias"),
        (COMPLETIONS, {"frequency_penalty": 0.5}, "frequency_penalty"),
        (EMBEDDINGS, {"dimensions": 8}, "dimensions"),
        (EMBEDDINGS, {"input": [[1, 2]]}, "input"),
        (EMBEDDINGS, {"input": []}, "input"),
    ],
)
async def test_unimplemented_fields_are_refused_by_name(
    url: str, path: str, extra: dict[str, Any], param: str
) -> None:
    base = {COMPLETIONS: PROMPT, CHAT: MESSAGES, EMBEDDINGS: {"model": "m", "input": "x"}}[path]
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(path, json={**base, **extra})
    err = _openai_error(r, param)
    assert param.split(".")[0] in err["message"]


async def test_ignorable_fields_are_accepted(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            CHAT,
            json={
                **MESSAGES,
                "user": "u1",
                "metadata": {"k": "v"},
                "store": False,
                "parallel_tool_calls": True,
                "tool_choice": "none",
                "response_format": {"type": "text"},
            },
        )
    assert r.status_code == 200, r.text


async def test_echo_prepends_the_prompt(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(COMPLETIONS, json={**PROMPT, "echo": True})
        plain = await c.post(COMPLETIONS, json=PROMPT)
        streamed = ""
        async with c.stream(
            "POST", COMPLETIONS, json={**PROMPT, "echo": True, "stream": True}
        ) as s:
            async for line in s.aiter_lines():
                if line.startswith("data: {"):
                    import json

                    for choice in json.loads(line[6:])["choices"]:
                        streamed += choice["text"]
    text = r.json()["choices"][0]["text"]
    assert text == "hello" + plain.json()["choices"][0]["text"]
    assert streamed == text
    assert r.json()["usage"] == plain.json()["usage"]


async def test_saxml_methods_refuse_unknown_extra_inputs(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            SCORE, json={"prefix": "a", "suffixes": ["b"], "extra_inputs": {"bogus": 1}}
        )
        _sax_error(r, "extra_inputs.bogus")
        r = await c.post(EMBED, json={"text": "a", "extra_inputs": {"temperature": 0.5}})
        _sax_error(r, "extra_inputs.temperature")
        r = await c.post(GENERATE, json={"text": "a", "extra_inputs": {"temperature": 2.5}})
        _sax_error(r, "extra_inputs.temperature")
        r = await c.post(
            GENERATE,
            content=_raw({"text": "a"}, "extra_inputs", '{"seed": NaN}'),
            headers=JSON_HEADERS,
        )
        _sax_error(r, "extra_inputs.seed")


async def test_embeddings_batch_is_one_admission_unit() -> None:
    # 300 inputs against an in-flight limit of 8: one request, admitted whole on an idle server.
    async with (
        echo_server(assign("m"), max_inflight_per_method=8) as (server, url),
        httpx.AsyncClient(base_url=url) as c,
    ):
        r = await c.post(EMBEDDINGS, json={"model": "m", "input": [f"t{i}" for i in range(300)]})
        assert r.status_code == 200, r.text
        assert [d["index"] for d in r.json()["data"]] == list(range(300))
        r = await c.post(COMPLETIONS, json={"model": "m", "prompt": [f"p{i}" for i in range(40)]})
        assert r.status_code == 200 and len(r.json()["choices"]) == 40
        gate = server.loaded("m").gate("lm.embed")
        assert gate.stats.pending == 0


async def test_admin_validation_errors_name_the_field() -> None:
    from sax.request_errors import validation_error

    err = validation_error(
        [{"type": "greater_than_equal", "loc": ("body", "num_replicas"), "msg": "bad"}]
    )
    assert (err.param, err.http_status) == ("num_replicas", 400)
