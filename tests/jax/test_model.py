"""The JAX transformer against transformers' float32 LlamaForCausalLM on the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sax.backends.jax import model
from sax.backends.jax.config import ModelConfig
from sax.backends.jax.weights import load_params
from sax.models import assets


def _relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _tied_mha_dir(tmp: Path) -> Path:
    """Multi-head (no GQA), tied embeddings, a large rope_theta and llama3 rope scaling."""
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=3,
        num_key_value_heads=3,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=True,
    )
    torch.manual_seed(1)
    ref = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.08) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    ref.save_pretrained(tmp, safe_serialization=True)
    return tmp


@pytest.fixture(scope="module", params=["tiny-gqa-untied", "mha-tied-llama3-rope"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "tiny-gqa-untied":
        return assets.tiny_llama_dir()
    return _tied_mha_dir(tmp_path_factory.mktemp("tied"))


def _load(path: Path) -> tuple[ModelConfig, Any, LlamaForCausalLM]:
    cfg = ModelConfig.load(str(path))
    params = jax.tree.map(jnp.asarray, load_params(str(path), cfg))
    ref = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return cfg, params, ref


def test_logits_match_transformers(checkpoint: Path) -> None:
    cfg, params, ref = _load(checkpoint)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        expected = ref(torch.tensor(tokens)).logits.numpy()
    ours = np.asarray(jax.jit(model.logits, static_argnums=2)(params, jnp.asarray(tokens), cfg))
    assert _relative_error(ours, expected) < 1e-4


def test_prefill_then_decode_match_full_forward(checkpoint: Path) -> None:
    """The cache path (prefill + one decode step per slot) equals the full forward's logits."""
    cfg, params, _ = _load(checkpoint)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 12)))
    full = np.asarray(model.logits(params, tokens, cfg))
    lengths = jnp.array([9, 5])
    first, ks, vs = model.prefill(params, tokens[:, :9], lengths, cfg)
    assert _relative_error(np.asarray(first), full[[0, 1], [8, 4]]) < 1e-4
    shape = (cfg.num_layers, 2, 16, cfg.num_kv_heads, cfg.head_dim)
    cache_k = jnp.zeros(shape).at[:, :, :9].set(ks)
    cache_v = jnp.zeros(shape).at[:, :, :9].set(vs)
    step, _, _ = model.decode(
        params, cache_k, cache_v, tokens[[0, 1], [9, 5]], lengths, cfg, window=16
    )
    assert _relative_error(np.asarray(step), full[[0, 1], [9, 5]]) < 1e-4


@pytest.mark.parametrize(("dtype", "exact"), [(jnp.float32, True), (jnp.bfloat16, False)])
def test_float32_weights_multiply_at_highest_precision(dtype: Any, exact: bool) -> None:
    """GPU and TPU round float32 matmul inputs by default (TF32, one bf16 pass); float32 weights
    ask for exact products in every compiled entry point, lower precisions keep the default."""
    path = str(assets.tiny_llama_dir())
    cfg = ModelConfig.load(path)
    params = jax.tree.map(lambda a: a.astype(dtype), load_params(path, cfg))
    tokens = jnp.ones((1, 8), jnp.int32)
    lengths = jnp.array([8])
    lowered = [
        jax.jit(model.logits, static_argnums=2).lower(params, tokens, cfg),
        jax.jit(model.prefill, static_argnums=3).lower(params, tokens, lengths, cfg),
        jax.jit(model.mean_embedding, static_argnums=3).lower(params, tokens, lengths, cfg),
    ]
    for text in (lo.as_text() for lo in lowered):
        assert "dot_general" in text
        assert ("HIGHEST" in text) is exact
