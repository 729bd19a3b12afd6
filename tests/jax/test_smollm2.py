"""Real weights: SmolLM2-135M-Instruct on the JAX engine against transformers, token for token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from sax.generation import SamplingOptions
from sax.models import assets
from sax.models.jax import SmolLM2_135M
from sax.server.servable import LoadSpec

STEPS = 40


@pytest.fixture(scope="module")
def smol() -> Iterator[SmolLM2_135M]:
    overrides = {"num_slots": 2, "max_seq_len": 128}
    servable = SmolLM2_135M(
        LoadSpec("/sax/test/smol", "sax.models.jax.SmolLM2_135M", "None", overrides)
    )
    asyncio.run(servable.load())
    try:
        yield servable
    finally:
        asyncio.run(servable.unload())


@pytest.fixture(scope="module")
def reference() -> Any:
    model_dir = str(assets.smollm2_dir())
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


async def test_greedy_matches_transformers_for_40_tokens(
    smol: SmolLM2_135M, reference: Any
) -> None:
    prompt = smol.chat_prompt([{"role": "user", "content": "Explain what a compiler does."}])
    assert "<|im_start|>assistant" in prompt  # the tokenizer's own chat template
    ids = smol._prefix_ids(prompt)
    handle = smol._engine().submit(ids, SamplingOptions(max_decode_steps=STEPS), ignore_eos=True)
    [sample] = await handle.result()
    with torch.no_grad():
        out = reference.generate(
            torch.tensor([ids]), max_new_tokens=STEPS, do_sample=False, eos_token_id=None
        )
    expected = [int(t) for t in out[0, len(ids) :]]
    assert handle.token_ids[0] == expected
    assert len(expected) == STEPS
    assert "compil" in sample.text.lower()  # real weights say something on topic


async def test_score_matches_reference(smol: SmolLM2_135M, reference: Any) -> None:
    prefix, suffix = "The capital of France is", " Paris."
    [score] = await smol.score(prefix, [suffix], {})
    head, tail = smol._prefix_ids(prefix), smol._suffix_ids(suffix)
    with torch.no_grad():
        logp = torch.log_softmax(reference(torch.tensor([head + tail])).logits[0].double(), -1)
    expected = sum(float(logp[len(head) + i - 1, t]) for i, t in enumerate(tail))
    assert score == pytest.approx(expected, abs=2e-3)
    [unlikely] = await smol.score(prefix, [" a banana."], {})
    assert score > unlikely
