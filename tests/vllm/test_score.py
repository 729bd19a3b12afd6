"""lm.score on the real engine, checked against transformers on the same tiny weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from sax.models import assets
from sax.models.vllm import Tiny

PREFIX = "I like to eat"
SUFFIXES = [" apples and bananas", " stock market", " robot", " the quick brown fox jumps"]


def reference_scores(prefix: str, suffixes: list[str]) -> list[float]:
    """log P(suffix | prefix) with transformers' LlamaForCausalLM in float32."""
    path = assets.tiny_llama_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prefix_ids = tokenizer(prefix).input_ids
    scores = []
    for suffix in suffixes:
        ids = tokenizer(prefix + suffix).input_ids
        assert ids[: len(prefix_ids)] == prefix_ids  # no merge across the boundary here
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores.append(sum(float(logp[t - 1, ids[t]]) for t in range(len(prefix_ids), len(ids))))
    return scores


async def test_score_matches_transformers_reference(tiny: Tiny) -> None:
    assert tiny.engine is not None and tiny.engine.dtype == "float32"  # the tests' override
    got = await tiny.score(PREFIX, SUFFIXES, {})
    want = reference_scores(PREFIX, SUFFIXES)
    assert got == pytest.approx(want, abs=2e-2, rel=1e-3)
    # The likelier continuation (by the reference) scores higher on the engine too.
    assert sorted(range(len(got)), key=got.__getitem__) == sorted(
        range(len(want)), key=want.__getitem__
    )
    assert all(s < 0 for s in got)


async def test_score_of_empty_prefix_and_empty_suffix(tiny: Tiny) -> None:
    [empty_suffix] = await tiny.score(PREFIX, [""], {})
    assert empty_suffix == 0.0  # probability 1
    [from_nothing] = await tiny.score("", [" robot"], {})
    assert from_nothing < 0.0  # conditioned on BOS, a real log-prob
