"""lm.generate and lm.generate_stream on the real vLLM engine (the session's Tiny model)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import pytest

from sax.backends.vllm_engine import VllmEngine
from sax.errors import Code, SaxError
from sax.generation import SamplingOptions
from sax.models.vllm import Tiny
from tests.vllm.conftest import wait_running

PROMPT = "Once upon a time there was a little robot"


async def test_greedy_is_deterministic_and_respects_max_decode_steps(tiny: Tiny) -> None:
    opts = tiny.sampling({"per_example_max_decode_steps": 12})
    first = await tiny.generate(PROMPT, opts)
    second = await tiny.generate(PROMPT, opts)
    assert len(first) == 1
    assert first[0].text == second[0].text and first[0].text
    assert first[0].num_tokens <= 12
    short = await tiny.generate(PROMPT, tiny.sampling({"per_example_max_decode_steps": 3}))
    assert short[0].num_tokens <= 3
    if first[0].finish_reason == "length":
        assert first[0].num_tokens == 12
        assert short[0].num_tokens == 3 and short[0].finish_reason == "length"
        # Greedy: the 3-token answer is the start of the 12-token one.
        assert first[0].text.startswith(short[0].text)


async def test_seeded_sampling_is_reproducible(tiny: Tiny) -> None:
    def opts(seed: int) -> SamplingOptions:
        return tiny.sampling({"temperature": 1.0, "seed": seed, "per_example_max_decode_steps": 16})

    a1 = await tiny.generate(PROMPT, opts(7))
    a2 = await tiny.generate(PROMPT, opts(7))
    others = [await tiny.generate(PROMPT, opts(s)) for s in (8, 9)]
    assert a1[0].text == a2[0].text
    assert a1[0].score == pytest.approx(a2[0].score, abs=1e-4)
    assert any(o[0].text != a1[0].text for o in others)


async def test_num_samples_gives_distinct_samples_with_real_scores(tiny: Tiny) -> None:
    opts = tiny.sampling(
        {"num_samples": 3, "temperature": 1.0, "seed": 1, "per_example_max_decode_steps": 8}
    )
    samples = await tiny.generate(PROMPT, opts)
    assert len(samples) == 3
    for s in samples:
        assert s.score < 0.0 and math.isfinite(s.score)  # a log-prob, not the original 0.0
        assert s.num_tokens >= 1
    assert len({s.text for s in samples}) > 1


async def test_top_k_one_equals_greedy(tiny: Tiny) -> None:
    greedy = await tiny.generate(PROMPT, tiny.sampling({"per_example_max_decode_steps": 10}))
    top1 = await tiny.generate(
        PROMPT,
        tiny.sampling(
            {"temperature": 1.0, "per_example_top_k": 1, "per_example_max_decode_steps": 10}
        ),
    )
    assert top1[0].text == greedy[0].text


async def test_stream_reassembles_to_the_greedy_text(tiny: Tiny) -> None:
    opts = tiny.sampling({"per_example_max_decode_steps": 20})
    [expected] = await tiny.generate(PROMPT, opts)
    text = ""
    chunks = last_tokens = 0
    last_score = 0.0
    async for items in tiny.generate_stream(PROMPT, opts):
        for item in items:
            assert item.index == 0
            assert item.prefix_len == len(text)  # never rewrites what was sent
            text = text[: item.prefix_len] + item.text
            last_score = item.score
            last_tokens = item.num_tokens
        chunks += 1
    assert text == expected.text
    assert last_tokens == expected.num_tokens
    assert chunks > 1  # streamed, not one final blob
    assert last_score == pytest.approx(expected.score, abs=1e-3)


async def test_stream_with_samples_reports_each_index(tiny: Tiny) -> None:
    opts = tiny.sampling(
        {"num_samples": 2, "temperature": 1.0, "seed": 3, "per_example_max_decode_steps": 8}
    )
    texts = {0: "", 1: ""}
    async for items in tiny.generate_stream(PROMPT, opts):
        for item in items:
            texts[item.index] = texts[item.index][: item.prefix_len] + item.text
    batch = await tiny.generate(PROMPT, opts)
    assert [texts[0], texts[1]] == [s.text for s in batch]


async def test_concurrent_requests_are_batched(tiny: Tiny) -> None:
    assert tiny.engine is not None
    opts = tiny.sampling({"per_example_max_decode_steps": 48})
    start = time.perf_counter()
    await tiny.generate("warm up", opts)
    one = time.perf_counter() - start

    start = time.perf_counter()
    requests = asyncio.gather(*(tiny.generate(f"{PROMPT} {i}", opts) for i in range(16)))
    peak_running = await _peak_running(tiny.engine, requests)
    results = await requests
    many = time.perf_counter() - start
    assert len(results) == 16 and all(r[0].num_tokens >= 1 for r in results)
    # The engine scheduled them together (continuous batching), and it shows in wall time.
    assert peak_running >= 8
    assert many < 16 * one / 2


async def _peak_running(engine: VllmEngine, requests: asyncio.Future[Any]) -> float:
    """The most requests vLLM's own ``vllm:num_requests_running`` gauge (set every engine step)
    showed while `requests` ran."""
    running = engine.metrics.restricted_registry(["vllm:num_requests_running"])

    def now() -> float:
        return sum(s.value for family in running.collect() for s in family.samples)

    peak = 0.0
    while not requests.done():
        peak = max(peak, now())
        await asyncio.sleep(0.002)
    return max(peak, now())


async def test_cancelling_a_request_aborts_it_in_the_engine(tiny: Tiny) -> None:
    engine = tiny.engine
    assert engine is not None
    opts = tiny.sampling({"per_example_max_decode_steps": 400})
    task = asyncio.create_task(tiny.generate(PROMPT, opts))
    await wait_running(tiny, 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert engine.num_unfinished == 0


async def test_closing_a_stream_early_aborts_it_in_the_engine(tiny: Tiny) -> None:
    engine = tiny.engine
    assert engine is not None
    stream = tiny.generate_stream(PROMPT, tiny.sampling({"per_example_max_decode_steps": 400}))
    received = 0
    async for _items in stream:
        received += 1
        if received == 3:
            break
    assert engine.num_unfinished == 1  # still running: nobody told the engine yet
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.num_unfinished == 0


async def test_prompt_longer_than_the_context_is_invalid(tiny: Tiny) -> None:
    with pytest.raises(SaxError) as err:
        await tiny.generate("robot " * 2000, tiny.sampling({}))
    assert err.value.code is Code.INVALID_ARGUMENT


async def test_chat_prompt_uses_the_tokenizer_template(tiny: Tiny) -> None:
    prompt = tiny.chat_prompt([{"role": "user", "content": "hi there"}])
    assert prompt == "<|user|>hi there<|end|><|assistant|>"
    assert tiny.count_tokens("hello world") >= 2
    [sample] = await tiny.generate(prompt, tiny.sampling({"per_example_max_decode_steps": 4}))
    assert sample.num_tokens >= 1
