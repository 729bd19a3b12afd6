"""The JAX engine behind the Tiny servable: exactness against transformers, batching, sampling,
streaming, cancellation and bounded compilation."""

from __future__ import annotations

import asyncio
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sax.backends.jax import model
from sax.errors import SaxError
from sax.generation import SamplingOptions
from sax.models.jax import Tiny

PROMPTS = ["The quick brown fox", "Hello world! How are", "Serving large language models"]


def _reference_greedy(ref: Any, prompt: list[int], steps: int) -> list[int]:
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, eos_token_id=None
        )
    return [int(t) for t in out[0, len(prompt) :]]


async def test_greedy_matches_transformers_generate(tiny: Tiny, tiny_reference: Any) -> None:
    """Prompts of different lengths decode together in one batch, each exactly as alone."""
    engine = tiny._engine()
    prompts = [tiny._prefix_ids(p) for p in PROMPTS]
    options = SamplingOptions(max_decode_steps=24)
    handles = [engine.submit(p, options, ignore_eos=True) for p in prompts]
    for prompt, handle in zip(prompts, handles, strict=True):
        await handle.result()
        assert handle.token_ids[0] == _reference_greedy(tiny_reference, prompt, 24)
        assert handle.samples[0].finish_reason == "length"


async def test_score_equals_reference_log_probs(tiny: Tiny, tiny_reference: Any) -> None:
    prefix, suffixes = "I like to eat", [" apples and bananas", " pasta", ""]
    scores = await tiny.score(prefix, suffixes, {})
    head = tiny._prefix_ids(prefix)
    for suffix, score in zip(suffixes, scores, strict=True):
        tail = tiny._suffix_ids(suffix)
        ids = torch.tensor([head + tail])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_reference(ids).logits[0].double(), dim=-1)
        expected = sum(float(logp[len(head) + i - 1, t]) for i, t in enumerate(tail))
        assert score == pytest.approx(expected, abs=1e-3 + 1e-4 * abs(expected))
    assert scores[2] == 0.0
    # A sum of log-probs: the longer suffix is less likely than its first token alone.
    assert scores[0] < 0


async def test_generate_score_is_sum_of_token_log_probs(tiny: Tiny) -> None:
    """The score of a sample equals lm.score of the sampled ids (the text may re-tokenize
    differently, so the ids are rescored)."""
    engine = tiny._engine()
    head = tiny._prefix_ids("Once upon a time")
    handle = engine.submit(head, SamplingOptions(max_decode_steps=8, temperature=1.0, seed=3))
    [sample] = await handle.result()
    [rescored] = await engine.score([(head, handle.token_ids[0])])
    assert sample.num_tokens == len(handle.token_ids[0]) > 0
    assert sample.score == pytest.approx(rescored, abs=1e-3)


async def test_gradient_matches_finite_differences(tiny: Tiny) -> None:
    response = await tiny.gradient("The stock market", " fell today", {})
    grad = response.gradients["input_embeddings"]
    [score] = await tiny.score("The stock market", [" fell today"], {})
    assert response.score[0] == pytest.approx(score, abs=1e-4)

    engine = tiny._engine()
    head, tail = tiny._prefix_ids("The stock market"), tiny._suffix_ids(" fell today")
    ids = jnp.asarray([head + tail])
    assert grad.shape == [len(head) + len(tail), tiny.engine.cfg.hidden_size]  # type: ignore[union-attr]
    g = np.asarray(grad.values, np.float64).reshape(grad.shape)
    assert np.abs(g).max() > 0

    starts, ends = jnp.array([len(head)]), jnp.array([ids.shape[1]])
    score_of = jax.jit(
        lambda e: model.suffix_logprob(engine.params, e, ids, starts, ends, engine.cfg)[0]
    )

    def f(embeds: jax.Array) -> float:
        return float(score_of(embeds))

    base = model.embed_tokens(engine.params, ids)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = rng.normal(size=g.shape)
        direction /= np.linalg.norm(direction)
        h = 1e-2
        d = jnp.asarray(direction[None], jnp.float32)
        numeric = (f(base + h * d) - f(base - h * d)) / (2 * h)
        analytic = float((g * direction).sum())
        assert numeric == pytest.approx(analytic, rel=2e-2, abs=2e-3)


async def test_embed_is_unit_norm_and_text_dependent(tiny: Tiny) -> None:
    a = np.asarray(await tiny.embed("Hello world", {}))
    b = np.asarray(await tiny.embed("The stock market fell", {}))
    assert a.shape == (128,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(a, b)


async def test_short_request_finishes_while_long_one_decodes(tiny: Tiny) -> None:
    engine = tiny._engine()
    order: list[str] = []
    long = engine.submit(
        tiny._prefix_ids("A journey of a thousand miles"),
        SamplingOptions(max_decode_steps=100),
        ignore_eos=True,
    )

    decoding = asyncio.Event()

    async def run_long() -> None:
        async for _ in long.stream():
            decoding.set()
        order.append("long")

    task = asyncio.create_task(run_long())
    await decoding.wait()
    steps_before = engine.steps
    short = engine.submit(tiny._prefix_ids("Hi"), SamplingOptions(max_decode_steps=4))
    await short.result()
    order.append("short")
    await task
    assert order == ["short", "long"]
    assert len(long.token_ids[0]) == 100
    # The short one joined the running batch: it took a few steps, not a wait for the long one.
    # Counted in the engine's own steps (the event loop may run late on a busy machine).
    assert short.finish_step is not None and long.finish_step is not None
    short_steps = short.finish_step - steps_before
    assert short_steps <= 8
    assert long.finish_step - steps_before > short_steps + 10


async def test_cancel_frees_the_slot(tiny: Tiny) -> None:
    engine = tiny._engine()
    start = engine.steps
    stream = tiny.generate_stream("Once upon a time", tiny.sampling({"max_decode_steps": 120}))
    await stream.__anext__()
    assert engine.slots_in_use() == 1
    await stream.aclose()
    for _ in range(200):
        if engine.slots_in_use() == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.slots_in_use() == 0
    # Freed by the cancel, not by running to its 120 tokens.
    assert engine.steps - start < 100


async def test_stream_deltas_rebuild_the_final_text(tiny: Tiny) -> None:
    extra = {"max_decode_steps": 20, "num_samples": 2, "temperature": 1.0, "seed": 5}
    texts = ["", ""]
    scores = [0.0, 0.0]
    async for items in tiny.generate_stream("She cooked pasta", tiny.sampling(extra)):
        for item in items:
            assert item.prefix_len == len(texts[item.index])
            texts[item.index] = texts[item.index][: item.prefix_len] + item.text
            scores[item.index] = item.score
    samples = await tiny.generate("She cooked pasta", tiny.sampling(extra))
    assert sorted(texts) == sorted(s.text for s in samples)
    assert sorted(scores) == pytest.approx(sorted(s.score for s in samples))
    assert texts[0] != texts[1]  # the two samples draw different tokens


async def test_seeded_sampling_is_reproducible(tiny: Tiny) -> None:
    def opts(seed: int, **kw: Any) -> SamplingOptions:
        extra = {"temperature": 1.0, "max_decode_steps": 16, "seed": seed, **kw}
        return tiny.sampling(extra)

    a = await tiny.generate("The admin server", opts(7))
    b = await tiny.generate("The admin server", opts(7))
    c = await tiny.generate("The admin server", opts(8))
    assert a[0].text == b[0].text and a[0].score == pytest.approx(b[0].score)
    assert a[0].text != c[0].text
    greedy = await tiny.generate("The admin server", tiny.sampling({"max_decode_steps": 16}))
    top1 = await tiny.generate("The admin server", opts(9, top_k=1))
    tiny_p = await tiny.generate("The admin server", opts(9, top_p=1e-6))
    assert top1[0].text == greedy[0].text == tiny_p[0].text


async def test_stop_string_cuts_the_text(tiny: Tiny) -> None:
    options = tiny.sampling({"max_decode_steps": 24})
    engine = tiny._engine()
    full = await engine.submit(
        tiny._prefix_ids("Numbers: 0 1 2"), options, ignore_eos=True
    ).result()
    text = full[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = text[: text.index(stop)]
    stopped = await tiny.generate(
        "Numbers: 0 1 2", tiny.sampling({"max_decode_steps": 24, "stop": [stop]})
    )
    assert stopped[0].text == cut
    assert stopped[0].finish_reason == "stop"
    streamed = ""
    async for items in tiny.generate_stream(
        "Numbers: 0 1 2", tiny.sampling({"max_decode_steps": 24, "stop": [stop]})
    ):
        streamed += "".join(i.text for i in items)
    assert streamed == cut


async def test_compiles_stay_within_the_buckets(tiny: Tiny) -> None:
    engine = tiny._engine()
    rng = np.random.default_rng(3)
    words = "the quick brown fox jumps over the lazy dog and runs".split()

    async def wave() -> None:
        jobs = []
        for _ in range(12):
            n = int(rng.integers(1, 25))
            prompt = " ".join(rng.choice(words, n))
            steps = int(rng.integers(1, 40))
            jobs.append(tiny.generate(prompt, tiny.sampling({"max_decode_steps": steps})))
        await asyncio.gather(*jobs)

    await wave()
    await wave()
    assert 0 < engine.compile_count <= engine.max_compiles
    # Every executable is for a bucket shape, never for a request's own length.
    allowed = {
        "prefill": (engine.prefill_buckets, engine.length_buckets),
        "decode": (engine.batch_buckets, engine.window_buckets),
        "score": (engine.batch_buckets, engine.length_buckets),
        "embed": (engine.batch_buckets, engine.length_buckets),
    }
    for kind, *shape in engine._compiled:
        if kind == "gradient":
            assert shape[0] in engine.length_buckets
        else:
            rows, lengths = allowed[kind]
            assert shape[0] in rows and shape[1] in lengths, (kind, shape)


async def test_unknown_extra_inputs_are_rejected(tiny: Tiny) -> None:
    with pytest.raises(SaxError, match="frobnicate"):
        tiny.sampling({"frobnicate": 1})
    with pytest.raises(SaxError, match="frobnicate"):
        await tiny.score("a", ["b"], {"frobnicate": 1})


async def test_prompt_longer_than_the_cache_is_rejected(tiny: Tiny) -> None:
    with pytest.raises(SaxError, match="tokens"):
        await tiny.generate("word " * 400, tiny.sampling({}))


def test_memory_estimate_covers_weights_and_cache(tiny: Tiny) -> None:
    engine = tiny._engine()
    assert Tiny.approx_params == engine.cfg.num_params
    weights = sum(x.nbytes for x in jax.tree.leaves(engine.params))
    cache = engine._cache_k.nbytes + engine._cache_v.nbytes
    assert weights + cache <= Tiny.memory_bytes(tiny.config) <= 2 * (weights + cache) + (64 << 20)


def test_registered_and_topology_override_reaches_the_config() -> None:
    from sax.server.registry import resolve
    from sax.server.servable import LoadSpec

    assert resolve("sax.models.jax.Tiny") is Tiny
    spec = LoadSpec(
        "/sax/test/t", "sax.models.jax.Tiny", "None", {"topology": "2x2", "num_slots": 4}
    )
    config = Tiny(spec).config
    assert (config.topology, config.num_slots) == ("2x2", 4)  # type: ignore[attr-defined]
    with pytest.raises(SaxError, match="topology"):
        Tiny(LoadSpec("/sax/test/t", "sax.models.jax.Tiny", "None", {"topology": "two"}))
    with pytest.raises(SaxError, match="num_slot"):
        Tiny(LoadSpec("/sax/test/t", "sax.models.jax.Tiny", "None", {"num_slot": 4}))
