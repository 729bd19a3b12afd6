"""The lean serving path on the real engine: prompt ids reused for usage, long prompts tokenised
off the event loop, and the prefix cache's hits visible on ``/metrics``."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sax.backends.vllm_engine import THREAD_TOKENIZE_CHARS
from sax.errors import Code, SaxError
from sax.models.vllm import Tiny
from tests.vllm.conftest import Served

SYSTEM = "You are a careful assistant. Answer briefly and name your sources. " * 16


def _counter(metrics: str, name: str, model: str) -> float:
    values = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == f"{name}_total" and sample.labels.get("model") == model
    ]
    assert values, f"{name} missing from /metrics"
    return sum(values)


async def test_usage_counts_reuse_the_ids_the_engine_ran(tiny: Tiny) -> None:
    engine = tiny.engine
    assert engine is not None
    prompt = "A prompt whose usage is counted after it ran: 17 apples."
    await tiny.generate(prompt, tiny.sampling({"per_example_max_decode_steps": 2}))
    before = engine._text_ids.cache_info()
    assert tiny.count_tokens(prompt) == len(engine.prompt_ids(prompt))
    after = engine._text_ids.cache_info()
    assert after.misses == before.misses  # no second tokenisation
    assert after.hits == before.hits + 2


async def test_long_prompt_is_tokenised_off_the_loop_and_refused_by_name(tiny: Tiny) -> None:
    """A prompt past the tokenise-in-a-thread threshold takes the same path to the engine; this
    one is longer than the context, so the engine refuses it naming the prompt."""
    long = "word " * (THREAD_TOKENIZE_CHARS // 5 + 1)
    with pytest.raises(SaxError) as err:
        await tiny.generate(long, tiny.sampling({}))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert err.value.param == "prompt"


async def test_shared_prefix_hits_the_prefix_cache(model_server: Served, tiny: Tiny) -> None:
    """Two prompts sharing a long system prompt: the second's prefill finds the shared KV
    blocks, and ``/metrics`` shows the hits."""
    options = tiny.sampling({"per_example_max_decode_steps": 2})
    model = "/sax/test/tiny"
    async with httpx.AsyncClient(base_url=model_server.url) as http:
        first = (await http.get("/metrics")).text
        await tiny.generate(SYSTEM + "First question?", options)
        await tiny.generate(SYSTEM + "Second question?", options)
        # The stat logger records once per engine step; a third request flushes the last one.
        await tiny.generate("flush", options)
        second = (await http.get("/metrics")).text
    queries = _counter(second, "vllm:prefix_cache_queries", model) - _counter(
        first, "vllm:prefix_cache_queries", model
    )
    hits = _counter(second, "vllm:prefix_cache_hits", model) - _counter(
        first, "vllm:prefix_cache_hits", model
    )
    assert tiny.engine is not None
    shared = len(tiny.engine.prompt_ids(SYSTEM))
    block = tiny.engine.kv_block_size
    assert shared >= 2 * block  # the prompt spans whole blocks
    assert queries >= 2 * shared
    assert hits >= shared // block * block - block  # the second prompt's shared whole blocks
    # vLLM's own model label names the model as sax does, not the directory it was loaded from.
    names = {
        sample.labels["model_name"]
        for family in text_string_to_metric_families(second)
        for sample in family.samples
        if sample.labels.get("model") == model and "model_name" in sample.labels
    }
    assert names == {model}
