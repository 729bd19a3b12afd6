"""Device mesh and tensor-parallel placement.

A servable's topology (``"1"``, ``"2x2"``, ``"4x4"``...) names how many chips it spans; the mesh
is one ``"tp"`` axis over the first that many devices. Attention heads, KV-cache heads, MLP
hidden units and the vocabulary are split over ``"tp"`` when they divide evenly, and replicated
otherwise (e.g. 3 KV heads on 4 devices), so any model runs on any mesh and XLA inserts the
collectives.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sax.backends.jax.config import ModelConfig

AXIS = "tp"


def topology_size(topology: str) -> int:
    """``"2x2"`` -> 4; ValueError for anything that is not ``NxMx...`` of positive integers."""
    try:
        dims = [int(d) for d in topology.lower().split("x")]
    except ValueError:
        dims = []
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"topology {topology!r} is not of the form N or NxM (e.g. '2x2')")
    return math.prod(dims)


def make_mesh(topology: str) -> Mesh:
    """A 1-axis mesh over the first ``topology_size`` devices; ValueError if there are fewer."""
    n = topology_size(topology)
    devices = jax.devices()
    if len(devices) < n:
        raise ValueError(
            f"topology {topology!r} needs {n} devices but only {len(devices)} "
            f"{devices[0].platform} device(s) are available"
        )
    return Mesh(np.array(devices[:n]), (AXIS,))


def _split(size: int, tp: int) -> str | None:
    return AXIS if size % tp == 0 else None


def param_specs(cfg: ModelConfig, tp: int) -> dict[str, Any]:
    """PartitionSpecs with the same tree structure as `weights.param_shapes`."""
    heads = _split(cfg.num_heads, tp)
    kv = _split(cfg.num_kv_heads, tp)
    ffn = _split(cfg.intermediate_size, tp)
    layer = {
        "attn_norm": PartitionSpec(),
        "mlp_norm": PartitionSpec(),
        "wq": PartitionSpec(None, heads),
        "wk": PartitionSpec(None, kv),
        "wv": PartitionSpec(None, kv),
        "wo": PartitionSpec(heads, None),
        "w_gate": PartitionSpec(None, ffn),
        "w_up": PartitionSpec(None, ffn),
        "w_down": PartitionSpec(ffn, None),
    }
    specs: dict[str, Any] = {
        "embed": PartitionSpec(),
        "final_norm": PartitionSpec(),
        "layers": [layer] * cfg.num_layers,
    }
    if not cfg.tie_embeddings:
        specs["lm_head"] = PartitionSpec(None, _split(cfg.vocab_size, tp))
    return specs


def cache_spec(cfg: ModelConfig, tp: int) -> PartitionSpec:
    """KV cache ``[L, slots, max_len, KV, hd]``: split over KV heads."""
    return PartitionSpec(None, None, None, _split(cfg.num_kv_heads, tp), None)


def shardings(mesh: Mesh, specs: Any) -> Any:
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s),
        specs,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
