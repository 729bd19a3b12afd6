"""Which dtype a vLLM servable runs when it asks for ``auto``, and that the answer serves.

vLLM's ``auto`` downcasts float32 checkpoints to bfloat16 for generative models on a CPU but to
float16 for pooling models; sax asks for bfloat16 there too (`resolve_dtype`). The module starts
one MiniLM engine at its published defaults and checks what it runs and what it returns.
"""

from __future__ import annotations

import pytest

from sax.backends.vllm_engine import EngineSettings, engine_args, resolve_dtype
from sax.models import assets
from sax.models.vllm import MiniLML6
from sax.server.servable import LoadSpec
from tests.vllm.test_embed import EAT_1, EAT_2, STOCKS, cosine, reference_embedding

CPU_DTYPES = ["bfloat16", "float16", "float32"]


@pytest.mark.parametrize(
    ("dtype", "runner", "cpu", "platform", "expected"),
    [
        ("auto", "pooling", True, CPU_DTYPES, "bfloat16"),  # the CPU pooling rule
        ("auto", "generate", True, CPU_DTYPES, "auto"),  # vLLM already picks bfloat16
        ("auto", "pooling", False, ["bfloat16", "float16", "float32"], "auto"),  # GPUs: vLLM's
        ("float32", "pooling", True, CPU_DTYPES, "float32"),  # an explicit dtype wins
        ("float16", "pooling", True, CPU_DTYPES, "float16"),
        ("auto", "pooling", True, ["float16", "float32"], "float16"),  # a CPU without bfloat16
        ("auto", "pooling", True, [], "auto"),
    ],
)
def test_auto_for_a_pooling_model_on_a_cpu_is_the_platforms_preferred_dtype(
    dtype: str, runner: str, cpu: bool, platform: list[str], expected: str
) -> None:
    assert resolve_dtype(dtype, runner, cpu=cpu, platform_dtypes=platform) == expected


def test_engine_args_carry_the_resolved_dtype() -> None:
    minilm = str(assets.minilm_dir())
    tiny = str(assets.tiny_llama_dir(seed=0))
    assert engine_args(EngineSettings(model=minilm, runner="pooling")).dtype == "bfloat16"
    assert engine_args(EngineSettings(model=tiny)).dtype == "auto"
    pinned = EngineSettings(model=minilm, runner="pooling", dtype="float32")
    assert engine_args(pinned).dtype == "float32"


async def test_minilm_at_its_defaults_runs_bfloat16_and_embeds_like_the_reference() -> None:
    servable = MiniLML6(
        LoadSpec("/sax/test/minilm-defaults", "sax.models.vllm.MiniLML6", "None", {})
    )
    assert servable.config.dtype == "auto"
    await servable.load()
    try:
        assert servable.engine is not None and servable.engine.dtype == "bfloat16"
        eat1 = await servable.embed(EAT_1, {})
        eat2 = await servable.embed(EAT_2, {})
        stocks = await servable.embed(STOCKS, {})
    finally:
        await servable.unload()
    assert cosine(eat1, reference_embedding(EAT_1)) > 0.999
    assert cosine(eat1, eat2) > cosine(eat1, stocks) + 0.1
