"""Tensor parallelism: a 1-, 2- and 4-device mesh produce the same greedy tokens.

The 4 devices are XLA's forced host devices (tests/jax/conftest.py). When jax was initialized
before that flag took effect (another test directory imported it first), or this host has an
accelerator with fewer than 4 chips, the comparison runs on the CPU in a fresh interpreter with
the flag set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import pytest

from sax.backends.jax.mesh import make_mesh, topology_size

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [[1, 40, 41, 42, 43], [1, 200, 7]]


def greedy_on_meshes() -> dict[str, Any]:
    """Greedy tokens of the tiny model per topology, and how its weights were placed."""
    import asyncio

    from sax.backends.jax.config import ModelConfig
    from sax.backends.jax.engine import Engine, EngineConfig
    from sax.backends.jax.weights import load_params
    from sax.generation import SamplingOptions
    from sax.models import assets

    path = str(assets.tiny_llama_dir())
    cfg = ModelConfig.load(path)
    params = load_params(path, cfg)
    out: dict[str, Any] = {"tokens": {}, "placement": {}}
    for topology in ("1", "2", "2x2"):
        engine = Engine(
            cfg,
            params,
            lambda ids: " ".join(map(str, ids)),
            EngineConfig(num_slots=2, max_seq_len=32, topology=topology),
        )
        engine.start()

        async def run(engine: Engine = engine) -> list[list[int]]:
            options = SamplingOptions(max_decode_steps=10)
            handles = [engine.submit(p, options, ignore_eos=True) for p in PROMPTS]
            for h in handles:
                await h.result()
            return [h.token_ids[0] for h in handles]

        out["tokens"][topology] = asyncio.run(run())
        layer = engine.params["layers"][0]
        out["placement"][topology] = {
            name: [len(layer[name].sharding.device_set), list(layer[name].sharding.spec)]
            for name in ("wq", "wk", "w_up")
        } | {"cache": list(engine._cache_k.sharding.spec)}
        engine.stop()
    return out


def _run() -> dict[str, Any]:
    if jax.device_count() >= 4:
        return greedy_on_meshes()
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    code = "import json, tests.jax.test_sharding as t; print(json.dumps(t.greedy_on_meshes()))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_meshes_of_1_2_and_4_devices_agree() -> None:
    result = _run()
    tokens = result["tokens"]
    assert len(tokens["1"][0]) == 10
    assert tokens["1"] == tokens["2"] == tokens["2x2"]
    placed = result["placement"]
    # 4 query heads split 4 ways; 2 KV heads split on 2 devices, replicated on 4.
    assert placed["2x2"]["wq"] == [4, [None, "tp"]]
    assert placed["2x2"]["wk"] == [4, [None, None]]
    assert placed["2"]["wk"] == [2, [None, "tp"]]
    assert placed["2x2"]["w_up"] == [4, [None, "tp"]]
    assert placed["2"]["cache"] == [None, None, None, "tp", None]
    assert placed["2x2"]["cache"] == [None, None, None, None, None]


def test_topology_needs_enough_devices() -> None:
    assert topology_size("2x2") == 4 and topology_size("4x4x2") == 32
    with pytest.raises(ValueError, match="needs 4096 devices"):
        make_mesh("64x64")
    with pytest.raises(ValueError, match="not of the form"):
        topology_size("2by2")
