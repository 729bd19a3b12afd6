"""Llama-family model configuration, read from a Hugging Face ``config.json``.

Only the fields the transformer needs are kept; anything the model cannot honour (biases, an
unknown rope scaling) is rejected at load time with the reason, not silently ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import fsspec

_SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "smollm")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, float], ...] = ()  # llama3-style; () = none
    tie_embeddings: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def num_params(self) -> int:
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + head + self.num_layers * per_layer + d

    def kv_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> ModelConfig:
        """Builds a config from a parsed HF config.json; ValueError names what is unsupported."""
        model_type = raw.get("model_type", "llama")
        if model_type not in _SUPPORTED_TYPES:
            raise ValueError(f"model_type {model_type!r} is not a Llama-family decoder")
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ValueError(f"{flag}=true is not supported by the JAX engine")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {raw.get('hidden_act')!r} is not supported (silu only)")
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        # transformers >= 5 nests rope settings under rope_parameters; older configs are flat.
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling: tuple[tuple[str, float], ...] = ()
        if rope_type == "llama3":
            keys = ("factor", "low_freq_factor", "high_freq_factor")
            scaling = (
                *((k, float(rope[k])) for k in keys),
                (
                    "original_max_position_embeddings",
                    float(rope["original_max_position_embeddings"]),
                ),
            )
        elif rope_type != "default":
            raise ValueError(f"rope type {rope_type!r} is not supported (default, llama3)")
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def load(cls, checkpoint: str) -> ModelConfig:
        """Reads ``<checkpoint>/config.json`` from a local directory or any fsspec URL."""
        with fsspec.open(f"{checkpoint.rstrip('/')}/config.json", "r") as fh:
            return cls.from_hf(json.load(fh))

    def rope_frequencies(self) -> list[float]:
        """Inverse rotary frequencies per pair of head dimensions (llama3 scaling applied)."""
        half = self.head_dim // 2
        inv = [1.0 / self.rope_theta ** (2 * i / self.head_dim) for i in range(half)]
        if not self.rope_scaling:
            return inv
        s = dict(self.rope_scaling)
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                out.append(f)
            elif wavelen > low_wavelen:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - low) / (high - low)
                out.append((1 - smooth) * f / factor + smooth * f)
        return out
