"""Shape buckets compiled while the model loads: once LOADED, generate requests of every bucket
trace and compile nothing, and a load can stop compiling part way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import jax
import numpy as np
import pytest
from jax import monitoring

from sax.backends.jax.engine import Engine, EngineConfig
from sax.generation import SamplingOptions
from sax.models.jax import Tiny
from sax.server.servable import LoadSpec

# Ten buckets: prefill (1, 2) x (16, 24, 32) and decode (1, 2) x (16, 32).
SMALL = {"num_slots": 2, "max_seq_len": 32, "max_prefill_batch": 2}
# Recorded whenever jit traces a function (persistent cache or not) or XLA compiles one.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/backend_compile_duration",
)


@pytest.fixture(scope="module")
def small_tiny() -> Iterator[Tiny]:
    servable = Tiny(LoadSpec("/sax/test/jaxsmall", "sax.models.jax.Tiny", "None", SMALL))
    asyncio.run(servable.load())
    try:
        yield servable
    finally:
        asyncio.run(servable.unload())


class CompileEvents:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, event: str, duration_s: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            self.seen.append(event)


def test_the_load_runs_every_bucket_a_lone_request_reaches(small_tiny: Tiny) -> None:
    """An executable's first run resolves its kernels (tenths of a second on a CPU), so the
    load runs each decode bucket and each single-prompt prefill once; batched prefills are
    compiled only."""
    engine = small_tiny._engine()
    decode = {k for k in engine.generation_buckets() if k[0] == "decode"}
    lone = {("prefill", 1, t) for t in engine.length_buckets}
    assert engine.warmed_buckets == decode | lone
    assert ("prefill", 2, 16) not in engine.warmed_buckets


async def test_requests_of_every_bucket_compile_nothing_after_load(small_tiny: Tiny) -> None:
    engine = small_tiny._engine()
    assert engine.compile_count == len(engine.generation_buckets()) == 10
    words = small_tiny._suffix_ids(" the quick brown fox jumps over the lazy dog" * 4)
    events = CompileEvents()
    monitoring.register_event_duration_secs_listener(events)
    try:
        # A request's samples are admitted together, so `n` samples run prefill over `n` rows
        # and decode over the first `n` slots; each runs to the end of the cache, through every
        # attention window.
        for length in engine.length_buckets:
            prompt = words[: min(length, engine.config.max_seq_len - 1)]
            for n in engine.batch_buckets:
                options = SamplingOptions(max_decode_steps=64, num_samples=n)
                handle = engine.submit(prompt, options, ignore_eos=True)
                samples = await handle.result()
                expected = engine.config.max_seq_len - len(prompt)
                assert [s.num_tokens for s in samples] == [expected] * n
        assert events.seen == []
        assert engine.compile_count == len(engine.generation_buckets())
        jax.jit(lambda x: x * 3 + 1)(np.arange(5))  # the listener does see compiles
        assert events.seen
    finally:
        monitoring.unregister_event_duration_listener(events)


def test_closing_precompile_stops_compiling(tiny: Tiny) -> None:
    serving = tiny._engine()
    config = EngineConfig(num_slots=2, max_seq_len=48, max_prefill_batch=2)
    engine = Engine(serving.cfg, serving.params, serving._decode_text, config)
    with closing(engine.precompile(workers=1)) as progress:
        done, total = next(progress)
    buckets = len(engine.generation_buckets())
    assert done == 1 and total > buckets  # each bucket compiles, then the cheap ones run once
    # The compile already running when it closed may finish; none queued behind it starts.
    assert engine.compile_count <= 2 < buckets
