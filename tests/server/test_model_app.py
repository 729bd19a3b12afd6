"""The data API over a real uvicorn on loopback, with the Echo test servable."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from sax.schemas import GenerateResponse, ServerStatus, StreamChunk, StreamDone
from sax.server.manager import ModelServer
from tests.server.harness import CELL, assign, echo_server


def pending(server: ModelServer, name: str, method: str) -> int:
    return server.loaded(name).gates[method].stats.pending


async def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((event, json.loads(line.split(":", 1)[1])))
    return events


async def test_generate_score_embed_status_and_errors() -> None:
    async with echo_server(assign("m")) as (server, url), httpx.AsyncClient(base_url=url) as c:
        r = await c.post(
            "/v1/models/m/lm.generate",
            json={"text": "hello world", "extra_inputs": {"num_samples": 2}},
        )
        assert r.status_code == 200, r.text
        samples = GenerateResponse.model_validate_json(r.content).samples
        assert [(s.text, s.score, s.num_tokens) for s in samples] == [
            ("hello world", 0.0, 2),
            ("hello world", -1.0, 2),
        ]
        r = await c.post("/v1/models/m/lm.score", json={"prefix": "a", "suffixes": ["bc", "d"]})
        assert r.json() == {"scores": [-2.0, -1.0]}
        r = await c.post("/v1/models/m/lm.embed", json={"text": "x"})
        vec = r.json()["embedding"]
        assert len(vec) == 8 and abs(sum(v * v for v in vec) - 1.0) < 1e-6

        r = await c.post(
            "/v1/models/m/lm.generate", json={"text": "x", "extra_inputs": {"tempreature": 1}}
        )
        assert r.status_code == 400
        assert (
            r.json()["error"]["code"] == "INVALID_ARGUMENT"
            and "tempreature" in r.json()["error"]["message"]
        )
        r = await c.post("/v1/models/m/lm.generate", json={"text": "x", "txet": "y"})
        assert r.status_code == 400 and "txet" in r.json()["error"]["message"]
        r = await c.post("/v1/models/nope/lm.generate", json={"text": "x"})
        assert r.status_code == 404
        assert r.json()["error"] == {
            "code": "NOT_FOUND",
            "message": f"model {CELL}/nope is not loaded on this server",
        }
        r = await c.post("/v1/nowhere", json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        r = await c.get("/v1/models/m/lm.generate")
        assert r.status_code == 405 and "error" in r.json()
        r = await c.post("/v1/models/m/lm.gradient", json={"prefix": "a", "suffix": "b"})
        assert (
            r.status_code == 400
            and "does not serve lm.gradient; it serves lm.embed" in (r.json()["error"]["message"])
        )
        r = await c.post("/v1/models/m/vm.classify", json={"image_bytes": ""})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"

        status = ServerStatus.model_validate_json((await c.get("/v1/status")).content)
        assert status.address == server.address
        (model,) = status.models
        assert model.status == "LOADED" and model.uuid == ""  # never shown to callers
        stats = model.method_stats["lm.generate"]
        assert stats.successes_per_second == 1 / 60 and stats.pending == 0
        assert model.method_stats["lm.score"].successes_per_second == 1 / 60
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        metrics = (await c.get("/metrics")).text
        assert (
            f'sax_method_requests_total{{method="lm.generate",model="{CELL}/m",outcome="success"}} 1.0'
            in metrics
        )
        assert f'sax_model_status{{model="{CELL}/m",status="LOADED"}} 1.0' in metrics
        latency = f'method="lm.generate",model="{CELL}/m"'
        assert f"sax_request_latency_seconds_count{{{latency}}} 1.0" in metrics
        assert f'sax_request_latency_seconds_bucket{{le="+Inf",{latency}}} 1.0' in metrics
        assert (await c.get("/docs")).status_code == 200
        spec = (await c.get("/openapi.json")).json()
        assert "/v1/models/{name}/lm.generate_stream" in spec["paths"]


async def test_generate_stream_sends_chunks_then_done() -> None:
    async with echo_server(assign("m")) as (_, url), httpx.AsyncClient(base_url=url) as c:
        body = {"text": "the quick fox", "extra_inputs": {"num_samples": 2}}
        async with c.stream("POST", "/v1/models/m/lm.generate_stream", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = await sse_events(r)
        kinds = [e for e, _ in events]
        assert kinds == ["chunk", "chunk", "chunk", "done"]
        acc = ["", ""]
        for _, data in events[:-1]:
            for item in StreamChunk.model_validate(data).items:
                acc[item.index] = acc[item.index][: item.prefix_len] + item.text
        assert acc == ["the quick fox", "the quick fox"]
        done = StreamDone.model_validate(events[-1][1])
        assert [(s.text, s.num_tokens) for s in done.samples] == [("the quick fox", 3)] * 2
        # Errors before the first byte are plain JSON errors a client can fail over on.
        r = await c.post(
            "/v1/models/m/lm.generate_stream", json={"text": "x", "extra_inputs": {"bogus": 1}}
        )
        assert r.status_code == 400 and "bogus" in r.json()["error"]["message"]
        r = await c.post("/v1/models/gone/lm.generate_stream", json={"text": "x"})
        assert r.status_code == 404


async def test_stream_deadline_mid_stream_is_an_error_event() -> None:
    # 40 words at 0.2 s each take 8 s; the first arrives long before the 3 s deadline, even on
    # a busy machine, and the deadline passes long before the last.
    slow = assign("m", overrides={"reply_delay_s": 0.2})
    async with echo_server(slow) as (server, url), httpx.AsyncClient(base_url=url) as c:
        body = {"text": " ".join(["word"] * 40), "timeout_s": 3.0}
        async with c.stream("POST", "/v1/models/m/lm.generate_stream", json=body) as r:
            assert r.status_code == 200
            events = await sse_events(r)
        assert events[0][0] == "chunk"
        assert events[-1][0] == "error"
        assert events[-1][1]["error"]["code"] == "DEADLINE_EXCEEDED"
        assert pending(server, "m", "lm.generate_stream") == 0
        assert server.loaded("m").gates["lm.generate_stream"].stats.error_total == 1


async def test_admission_limit_is_429_and_deadline_is_504() -> None:
    slow = assign("m", overrides={"reply_delay_s": 1.5})
    async with (
        echo_server(slow, max_inflight_per_method=2) as (server, url),
        httpx.AsyncClient(base_url=url) as c,
    ):
        replies = await asyncio.gather(
            *(c.post("/v1/models/m/lm.generate", json={"text": f"r{i}"}) for i in range(3))
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 200, 429]
        (limited,) = [r for r in replies if r.status_code == 429]
        assert limited.json()["error"]["code"] == "RESOURCE_EXHAUSTED"

        start = time.monotonic()
        r = await c.post("/v1/models/m/lm.generate", json={"text": "x", "timeout_s": 0.1})
        assert r.status_code == 504 and r.json()["error"]["code"] == "DEADLINE_EXCEEDED"
        assert time.monotonic() - start < 1.0  # the deadline's 0.1 s, not the reply's 1.5 s
        assert pending(server, "m", "lm.generate") == 0
        stats = server.loaded("m").gates["lm.generate"].stats
        assert (stats.success_total, stats.error_total) == (2, 1)  # the 429 was never admitted


async def _open_request(
    url: str, path: str, body: dict[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    return reader, writer


async def _until(predicate: Any, timeout_s: float = 2.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_client_disconnect_cancels_the_engine_call() -> None:
    slow = assign("m", overrides={"reply_delay_s": 5.0})
    async with echo_server(slow) as (server, url):
        _, writer = await _open_request(url, "/v1/models/m/lm.generate", {"text": "x"})
        await _until(lambda: pending(server, "m", "lm.generate") == 1)
        writer.close()
        assert await _until(lambda: pending(server, "m", "lm.generate") == 0) < 1.0
        assert server.loaded("m").gates["lm.generate"].stats.error_total == 1


async def test_client_disconnect_mid_stream_closes_the_engine_stream() -> None:
    slow = assign("m", overrides={"reply_delay_s": 0.3})
    async with echo_server(slow) as (server, url):
        reader, writer = await _open_request(
            url, "/v1/models/m/lm.generate_stream", {"text": "a b c d e f g h i j"}
        )
        head = await reader.readuntil(b"event: chunk")
        assert b"200 OK" in head
        assert pending(server, "m", "lm.generate_stream") == 1
        writer.close()
        assert await _until(lambda: pending(server, "m", "lm.generate_stream") == 0) < 1.0


async def test_instruct_servables_wrap_lm_generate_in_the_chat_prompt() -> None:
    """lm.generate[_stream] send `lm_prompt(text)` (one user turn when the config says chat);
    OpenAI completions send the raw prompt."""
    chat = assign("m", overrides={"chat": True})
    async with echo_server(chat) as (_, url), httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/models/m/lm.generate", json={"text": "hi there"})
        assert r.json()["samples"][0]["text"] == "user: hi there\nassistant:"
        async with c.stream(
            "POST", "/v1/models/m/lm.generate_stream", json={"text": "hi there"}
        ) as s:
            events = await sse_events(s)
        assert events[-1][1]["samples"][0]["text"] == "user: hi there\nassistant:"
        r = await c.post("/v1/completions", json={"model": "m", "prompt": "hi there"})
        assert r.json()["choices"][0]["text"] == "hi there"


async def test_oversized_bodies_are_413_and_reach_no_servable() -> None:
    async with echo_server(assign("m"), max_body_bytes=1000) as (server, url):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/v1/models/m/lm.generate", json={"text": "x" * 2000})
            assert r.status_code == 413
            assert r.json()["error"]["message"] == "request body is larger than 1000 bytes"

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: checked as it streams
                yield b'{"text": "'
                for _ in range(20):
                    yield b"y" * 100
                yield b'"}'

            r = await c.post("/v1/models/m/lm.generate", content=chunks())
            assert r.status_code == 413
            r = await c.post("/v1/models/m/lm.generate", json={"text": "small"})
            assert r.status_code == 200
        assert server.loaded("m").gates["lm.generate"].stats.pending == 0
