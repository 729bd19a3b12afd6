"""Model parameters: safetensors checkpoints (local or any fsspec URL, e.g. gs://) or random init.

Parameters are a plain pytree (nested dicts of arrays). ``"layers"`` is a list with one dict of
separate arrays per layer, so each layer reads its weights where they lie (slicing a layer out of
stacked arrays copies it on CPU, on every call). Linear weights are stored ``[in, out]`` (HF
stores ``[out, in]``).

The safetensors format is parsed here (an 8-byte header length, a JSON header, raw bytes) rather
than through ``safetensors.numpy`` because that one has no bfloat16, which most checkpoints use;
``ml_dtypes`` (a jax dependency) supplies the numpy bfloat16 type.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import fsspec
import ml_dtypes
import numpy as np

from sax.backends.jax.config import ModelConfig

Params = dict[str, Any]

_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
}

# our name -> (HF name pattern, transpose)
_LAYER_KEYS: dict[str, tuple[str, bool]] = {
    "attn_norm": ("input_layernorm.weight", False),
    "wq": ("self_attn.q_proj.weight", True),
    "wk": ("self_attn.k_proj.weight", True),
    "wv": ("self_attn.v_proj.weight", True),
    "wo": ("self_attn.o_proj.weight", True),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "w_gate": ("mlp.gate_proj.weight", True),
    "w_up": ("mlp.up_proj.weight", True),
    "w_down": ("mlp.down_proj.weight", True),
}


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of each of one layer's weights."""
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    return {
        "attn_norm": (d,),
        "wq": (d, cfg.num_heads * hd),
        "wk": (d, cfg.num_kv_heads * hd),
        "wv": (d, cfg.num_kv_heads * hd),
        "wo": (cfg.num_heads * hd, d),
        "mlp_norm": (d,),
        "w_gate": (d, f),
        "w_up": (d, f),
        "w_down": (f, d),
    }


def param_shapes(cfg: ModelConfig) -> dict[str, Any]:
    """The shape of every parameter, as the same pytree the model consumes."""
    d = cfg.hidden_size
    shapes: dict[str, Any] = {
        "embed": (cfg.vocab_size, d),
        "layers": [layer_shapes(cfg) for _ in range(cfg.num_layers)],
        "final_norm": (d,),
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (d, cfg.vocab_size)
    return shapes


def random_params(cfg: ModelConfig, seed: int = 0, scale: float = 0.02) -> dict[str, Any]:
    """Random weights of the declared architecture (checkpoint "None"); norms start at 1."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name.endswith("norm"):
            return np.ones(shape, np.float32)
        return rng.normal(0.0, scale, shape).astype(np.float32)

    shapes = param_shapes(cfg)
    out: dict[str, Any] = {k: init(k, v) for k, v in shapes.items() if k != "layers"}
    # Drawn as one [layers, ...] array per weight, so a seed gives the same values as ever.
    n = cfg.num_layers
    stacked = {k: init(k, (n, *v)) for k, v in layer_shapes(cfg).items()}
    out["layers"] = [{k: v[i] for k, v in stacked.items()} for i in range(n)]
    return out


def _read_safetensors(url: str) -> Iterator[tuple[str, np.ndarray]]:
    with fsspec.open(url, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
        base = 8 + header_len
        for name, meta in sorted(header.items(), key=lambda kv: kv[0]):
            if name == "__metadata__":
                continue
            dtype = _DTYPES.get(meta["dtype"])
            if dtype is None:
                raise ValueError(f"{url}: tensor {name} has unsupported dtype {meta['dtype']}")
            start, end = meta["data_offsets"]
            fh.seek(base + start)
            buf = fh.read(end - start)
            yield name, np.frombuffer(buf, dtype=dtype).reshape(meta["shape"])


def _weight_files(checkpoint: str) -> list[str]:
    root = checkpoint.rstrip("/")
    fs, path = fsspec.core.url_to_fs(root)
    index = f"{path}/model.safetensors.index.json"
    if fs.exists(index):
        with fs.open(index, "r") as fh:
            names = sorted(set(json.load(fh)["weight_map"].values()))
        return [f"{root}/{n}" for n in names]
    if fs.exists(f"{path}/model.safetensors"):
        return [f"{root}/model.safetensors"]
    raise FileNotFoundError(f"no model.safetensors (or index) under {checkpoint!r}")


def load_params(checkpoint: str, cfg: ModelConfig) -> dict[str, Any]:
    """Reads HF Llama-layout safetensors into the parameter pytree, as float32 numpy arrays.

    Raises ValueError naming the first missing or mis-shaped tensor, so a checkpoint that does
    not match its config.json fails at load rather than producing garbage.
    """
    tensors: dict[str, np.ndarray] = {}
    for url in _weight_files(checkpoint):
        for name, arr in _read_safetensors(url):
            tensors[name.removeprefix("model.")] = arr

    def take(name: str, transpose: bool) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"checkpoint {checkpoint!r} lacks tensor {name!r}")
        arr = tensors[name].astype(np.float32)
        return arr.T if transpose else arr

    params: dict[str, Any] = {
        "embed": take("embed_tokens.weight", False),
        "final_norm": take("norm.weight", False),
        "layers": [
            {key: take(f"layers.{i}.{hf}", t) for key, (hf, t) in _LAYER_KEYS.items()}
            for i in range(cfg.num_layers)
        ],
    }
    if not cfg.tie_embeddings:
        params["lm_head"] = take("lm_head.weight", True)
    shapes = param_shapes(cfg)
    for key, shape in shapes.items():
        if key != "layers" and params[key].shape != shape:
            raise ValueError(f"tensor {key} has shape {params[key].shape}, config says {shape}")
    for i, layer in enumerate(params["layers"]):
        for k, s in shapes["layers"][i].items():
            if layer[k].shape != s:
                raise ValueError(
                    f"tensor layers.{i}.{k} has shape {layer[k].shape}, config says {s}"
                )
    return params
