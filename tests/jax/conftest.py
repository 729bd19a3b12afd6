"""Shared JAX fixtures: one Tiny servable and its transformers reference for the whole session.

XLA reads ``--xla_force_host_platform_device_count`` when jax first initializes its CPU backend,
so it is set here before this directory imports jax. If another test directory initialized jax
first, the process has one device and the sharding test re-runs itself in a subprocess.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = " ".join(
    f for f in [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"] if f
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sax.models import assets
from sax.models.jax import Tiny
from sax.server.servable import LoadSpec


@pytest.fixture(scope="session")
def tiny() -> Iterator[Tiny]:
    """The Tiny servable with its engine running (the engine thread outlives event loops)."""
    servable = Tiny(LoadSpec("/sax/test/jaxtiny", "sax.models.jax.Tiny", "None", {}))
    asyncio.run(servable.load())
    try:
        yield servable
    finally:
        asyncio.run(servable.unload())


@pytest.fixture(scope="session")
def tiny_reference() -> Any:
    """transformers' float32 LlamaForCausalLM on the same weights."""
    import torch
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(
        str(assets.tiny_llama_dir()), dtype=torch.float32
    ).eval()
