"""lm.embed with the real all-MiniLM-L6-v2 on vLLM's pooling runner, and engine unload."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from sax.errors import Code, SaxError
from sax.models import assets
from sax.models.vllm import MiniLML6

EAT_1 = "I ate a delicious sandwich for lunch."
EAT_2 = "She is eating a bowl of pasta for dinner."
STOCKS = "Shares of technology companies fell sharply on the stock exchange."


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def reference_embedding(text: str) -> list[float]:
    """sentence-transformers' recipe for this model: mean pooling, then L2 normalization."""
    path = assets.minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0]
    mask = batch["attention_mask"][0].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(0) / mask.sum()
    return [float(x) for x in torch.nn.functional.normalize(pooled, dim=0)]


async def test_embeddings_are_real_minilm(minilm: MiniLML6) -> None:
    eat1 = await minilm.embed(EAT_1, {})
    eat2 = await minilm.embed(EAT_2, {})
    stocks = await minilm.embed(STOCKS, {})
    assert len(eat1) == 384
    assert math.sqrt(sum(x * x for x in eat1)) == pytest.approx(1.0, abs=1e-3)
    assert cosine(eat1, eat2) > cosine(eat1, stocks) + 0.1
    assert eat1 == pytest.approx(reference_embedding(EAT_1), abs=2e-3)


async def test_embedding_model_serves_only_embed(minilm: MiniLML6) -> None:
    assert minilm.methods == frozenset({"lm.embed"})
    with pytest.raises(SaxError) as err:
        await minilm.generate("hello", minilm.sampling({}))
    assert err.value.code is Code.UNIMPLEMENTED
